// attnlens page: the compare view (two models, one image): the cards of one block paired side by side (Pair: one
// colour range, controls and queries echoed to the other side), their difference B − A, the header and rows.
import { Card } from "./card.js";
import { DIVERGING, union } from "./colours.js";
import { $, element, format } from "./dom.js";
import { translateCell } from "./geometry.js";
import { modelName } from "./models.js";
import { SIDES, state } from "./state.js";

// B − A of two paired maps of one shape: a diverging colormap on the symmetric range [-m, m], m = max |B − A|
class DifferenceCard extends Card {
  constructor(a, b) {
    const id = a.block.id === b.block.id ? a.block.id : `${a.block.id} vs ${b.block.id}`;
    const meaning = "B − A of the two maps: red where B's is higher, blue where it is lower, white where they agree.";
    const heatmap = { meaning, unit: a.block.heatmap.unit };
    super({ id, type: "diff", heatmap, maps: {} }, { report: a.report, model: a.model, side: null, compare: true });
    this.a = a;
    this.b = b;
    this.element.dataset.kind = a.block.type;
  }

  title() { return `difference (B − A) · ${this.block.id}`; }
  cellSize() { return this.a.cellSize(); }
  lut() { return DIVERGING; }
  detections() { return []; }
  fileName() { return `${this.block.id}-difference`; }

  grid() {
    const a = this.a.grid();
    return this.b.grid().map((row, r) => row.map((v, c) => (v === null || a[r][c] === null ? null : v - a[r][c])));
  }

  range(grid) {
    const m = this.largest(grid).value;
    return m > 0 ? [-m, m] : [-1, 1];
  }

  largest(grid) {
    let value = 0, cell = [0, 0], sum = 0;
    grid.forEach((row, r) => row.forEach((v, c) => {
      if (v === null) return;
      sum += Math.abs(v);
      if (Math.abs(v) > value) { value = Math.abs(v); cell = [r, c]; }
    }));
    return { value, cell, mean: sum / (grid.length * grid[0].length) };
  }

  scaleNote(grid) {
    const { value } = this.largest(grid);
    if (!value) return "The two maps are identical (B − A = 0).";
    return `Symmetric range ±${format(value)}: m = max |B − A|.`;
  }

  legend(range, grid) {
    super.legend(range, grid);
    if (!this.largest(grid).value) for (const end of [".low", ".high"]) $(end, this.element).textContent = "0";
  }

  overlay(context) {
    const query = this.a.selected && this.a.queryGrid;
    if (query) { // the query picked on A and B, outlined here too
      const [x, y] = this.view.cellCentre(...this.a.selected, query.stride);
      const [w, h] = [query.stride * this.view.sx, query.stride * this.view.sy];
      context.save();
      context.strokeStyle = "#111";
      context.lineWidth = 3;
      context.strokeRect(x - w / 2, y - h / 2, w, h);
      context.restore();
    }
    const { value, cell, mean } = this.largest(this.grid());
    this.detail(value ? `Largest |B − A| = ${format(value)} at cell (${cell.join(", ")}); ` +
      `mean |B − A| = ${format(mean)}.` : "");
  }
}

// two cards of one block in the compare view (the same id, else the same kind in order) and their difference
class Pair {
  constructor(a, b) {
    this.a = a;
    this.b = b;
    a.pair = b.pair = this;
    const shape = (card) => card.block.heatmap.shape.join("x");
    this.difference = shape(a) === shape(b) ? new DifferenceCard(a, b) : null;
  }

  partner(card) { return card === this.a ? this.b : this.a; }
  union(measure) { return union(measure(this.a), measure(this.b)); }

  draw() { for (const card of [this.a, this.b, this.difference]) if (card) card.draw(); }

  // a control (head, channel) set on one side: its twin on the other side follows
  follow(card, name, value) {
    const twin = $(`select[name="${name}"]`, this.partner(card).element);
    if (twin && [...twin.options].some((option) => option.value === value)) twin.value = value;
    this.draw();
  }

  // a query picked on one side: the other side picks the same image position
  echo(card, cell) {
    const other = this.partner(card);
    if (!card.queryGrid || !other.queryGrid) return;
    other.pinned = card.pinned;
    other.select(translateCell(cell, card.queryGrid, other.queryGrid), false);
    if (this.difference) this.difference.draw();
  }
}

// rows [a, b] of the compare view: the same id first, then the same kind in order; null where none is left
function pairUp(left, right) {
  const free = new Set(right);
  const take = (test) => {
    const found = [...free].find(test) || null;
    free.delete(found);
    return found;
  };
  const rows = left.map((a) => [a, take((b) => b.block.id === a.block.id && b.block.type === a.block.type)]);
  for (const row of rows) if (!row[1]) row[1] = take((b) => b.block.type === row[0].block.type);
  return [...rows, ...[...free].map((b) => [null, b])];
}

function compareHeader(sides) {
  const header = document.createElement("div");
  header.className = "pair-head";
  header.append(...sides.map((model, side) => element("h3", `${SIDES[side]} · ${modelName(model)}`)),
    element("h3", "difference (B − A)"));
  return header;
}

// one row of the compare view: A, B, their difference; a note where one is missing
function compareRow([a, b, difference]) {
  const row = document.createElement("div");
  row.className = "pair-row";
  const missing = (text) => Object.assign(element("p", text), { className: "missing hint" });
  row.append(a ? a.element : missing("Model A has no block of this kind."),
    b ? b.element : missing("Model B has no block of this kind."),
    difference ? difference.element : missing(a && b ? "Maps of different shapes: no difference." : ""));
  return row;
}

// the compare view in the #cards container: the header, then one row per block of either deck (A's, B's)
export function showCompared(container, decks, sides) {
  const rows = pairUp(...decks).map(([a, b]) => [a, b, a && b ? new Pair(a, b).difference : null]);
  state.cards = rows.flat().filter(Boolean);
  container.replaceChildren(compareHeader(sides), ...rows.map(compareRow));
}
