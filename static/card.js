// attnlens page: what every card does (the base class of each card family): its element from #card-template,
// layout on the canvas, the image with the map over it and the boxes, the legend, extra controls (head, channel),
// clickable queries (pointer and keyboard), the PNG download, the "without its preference" button (knockout.js).
import { rangeOf } from "./colours.js";
import { chosenIn, drawDetections, drawGroundTruth, drawnIn } from "./detections.js";
import { $, element, format, saveBlob } from "./dom.js";
import { View } from "./geometry.js";
import { knockoutHovered, lostOn, toggleKnockout } from "./knockout.js";
import { modelName } from "./models.js";
import { MARGIN, MAX_VIEW, SIDES, state } from "./state.js";

function strideOf(model, id) {
  const block = model && model.blocks.find((b) => b.id === id);
  return block ? block.feature_stride : 1;
}

function sameCell(a, b) { return a && b && a[0] === b[0] && a[1] === b[1]; }

export class Card {
  // source: { report, model (its description), side (0: A, 1: B; null: the difference), compare }
  constructor(block, source) {
    this.block = block;
    this.report = source.report;
    this.model = source.model;
    this.side = source.side;
    this.compare = source.compare;
    this.pair = null; // the Pair of the compare view
    this.stride = strideOf(this.model, block.id);
    this.selected = null; // [row, col] of the clicked / hovered query
    this.element = $("#card-template").content.firstElementChild.cloneNode(true);
    this.element.dataset.blockId = block.id;
    this.element.dataset.type = block.type;
    if (this.compare && this.side !== null) this.element.dataset.side = SIDES[this.side];
    this.canvas = $(".view", this.element);
    $(".card-title", this.element).textContent = this.title();
    $(".meaning", this.element).textContent = block.heatmap.meaning;
    $(".unit", this.element).textContent = block.heatmap.unit;
    $(".download-png", this.element).addEventListener("click", () => this.download());
    this.knockoutShown = false;
    this.knockoutEntry = null; // this block's entry of the side's include=knockout answer, once asked
    this.knockoutButton = $(".knockout-toggle", this.element);
    if (this.knockable()) {
      this.knockoutButton.addEventListener("click", () => toggleKnockout(this));
      for (const event of ["pointerenter", "focusin"]) this.element.addEventListener(event, () => knockoutHovered(this));
    } else {
      this.knockoutButton.remove();
    }
    this.setup();
  }

  knockable() { return this.side !== null; } // a block's card (not the reference's, not a difference)

  title() {
    const side = this.compare ? `${SIDES[this.side]} · ` : "";
    return `${side}${this.block.id} — ${this.block.type.toUpperCase()} · stride ${this.stride}`;
  }

  setup() {}
  hasMargins() { return false; }
  grid() { return this.block.heatmap.values; }
  cellSize() { return [this.stride, this.stride]; } // input pixels per map cell, [height, width]
  lut() { return state.luts[state.colormap]; }
  range(grid) { return this.pair ? this.pair.union((card) => rangeOf(card.grid())) : rangeOf(grid); }
  detections() { return this.report.detections || []; }
  overlay() {} // drawn over the map (selections)

  // a select among the extra controls; in the compare view the paired card's twin follows it
  control(text, name, options) {
    const label = element("label", `${text} `);
    const select = document.createElement("select");
    select.name = name;
    for (const [value, caption] of options) select.append(new Option(caption, value));
    select.addEventListener("change", () => (this.pair ? this.pair.follow(this, name, select.value) : this.draw()));
    label.append(select);
    $(".extra-controls", this.element).append(label);
    return select;
  }

  layout() {
    const { width, height } = this.report.image;
    const available = Math.min(MAX_VIEW, this.element.clientWidth - 24 || MAX_VIEW);
    const scale = Math.min(available / width, MAX_VIEW / height, 4);
    const margin = this.hasMargins() ? MARGIN : 0;
    this.canvas.width = Math.round(width * scale) + margin;
    this.canvas.height = Math.round(height * scale) + margin;
    this.view = new View(this.report, margin, margin, Math.round(width * scale), Math.round(height * scale));
  }

  draw() {
    this.layout();
    const context = this.canvas.getContext("2d");
    context.clearRect(0, 0, this.canvas.width, this.canvas.height);
    context.drawImage(state.image, this.view.left, this.view.top, this.view.width, this.view.height);
    const grid = this.grid();
    const range = this.range(grid);
    this.view.drawMap(context, grid, this.cellSize(), range, this.lut());
    this.overlay(context);
    const detections = this.detections();
    const lost = state.boxes === "none" ? [] : lostOn(this).filter((i) => i < detections.length);
    const chosen = drawnIn(this.side, detections.length);
    const drawn = [...chosen, ...lost.filter((i) => !chosen.includes(i))]; // and the lost ones, dashed
    const truth = this.side === null ? null : this.report.ground_truth;
    if (truth) this.element.dataset.groundTruth = JSON.stringify(drawGroundTruth(context, this.view, truth));
    drawDetections(context, this.view, detections, drawn, chosenIn(this.side), truth, new Set(lost));
    this.element.dataset.lost = lost.join(",");
    const boxes = detections.map((d) => this.view.imageBox(d.box).map((v) => Math.round(v)));
    this.element.dataset.boxes = JSON.stringify(boxes); // every detection's box on this canvas, drawn or not
    this.element.dataset.drawn = drawn.join(",");
    this.legend(range, grid);
  }

  legend([low, high], grid) {
    const bar = $(".colorbar", this.element).getContext("2d");
    const lut = this.lut();
    for (let i = 0; i < 256; i++) {
      bar.fillStyle = `rgb(${lut[i].join(",")})`;
      bar.fillRect(i, 0, 1, 10);
    }
    $(".low", this.element).textContent = format(low);
    $(".high", this.element).textContent = format(high);
    $(".scale", this.element).textContent = this.scaleNote(grid);
    this.element.dataset.range = `${low},${high}`;
  }

  scaleNote(grid) {
    if (!this.pair) return "";
    const [low, high] = rangeOf(grid);
    return `Colour range shared by A and B (the union of theirs); this map spans ${format(low)} – ${format(high)}.`;
  }

  detail(text) { $(".detail", this.element).textContent = text; }

  fileName() { return this.compare ? `${modelName(this.model)}-${this.block.id}` : this.block.id; }

  download() {
    this.canvas.toBlob((blob) => saveBlob(blob, `${this.fileName()}.png`), "image/png");
  }

  // queries that can be clicked (ACmix, DCN): pointer and keyboard select a cell of the output grid
  enableQueries(rows, cols, queryStride) {
    this.queryGrid = { rows, cols, stride: queryStride };
    const pick = (event, pin) => {
      const rect = this.canvas.getBoundingClientRect();
      const x = (event.clientX - rect.left) * (this.canvas.width / rect.width);
      const y = (event.clientY - rect.top) * (this.canvas.height / rect.height);
      const cell = this.view.cellAt(x, y, queryStride, rows, cols);
      if (!cell || (this.pinned && !pin)) return;
      this.pinned = pin ? !this.pinned || !sameCell(cell, this.selected) : this.pinned;
      this.select(cell);
    };
    this.canvas.addEventListener("click", (event) => pick(event, true));
    this.canvas.addEventListener("pointermove", (event) => pick(event, false));
    this.canvas.addEventListener("keydown", (event) => {
      const moves = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1] };
      if (!(event.key in moves)) return;
      event.preventDefault();
      const [row, col] = this.selected || [Math.floor(rows / 2), Math.floor(cols / 2)];
      const [dr, dc] = moves[event.key];
      this.pinned = true;
      this.select([Math.max(0, Math.min(rows - 1, row + dr)), Math.max(0, Math.min(cols - 1, col + dc))]);
    });
    this.canvas.setAttribute("aria-label", `${this.block.type} map: click a position or use the arrow keys`);
  }

  // echo: the paired card selects the same image position
  select(cell, echo = true) {
    const started = performance.now();
    this.selected = cell;
    this.draw();
    this.element.dataset.selected = cell.join(",");
    this.element.dataset.selectMs = (performance.now() - started).toFixed(1);
    if (echo && this.pair) this.pair.echo(this, cell);
  }
}
