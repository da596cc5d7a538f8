// attnlens page: the block cards, one class per kind (GC context, CA coordinate attention, ACmix window attention,
// DCN sampling points, SPD phases) over the Card base; CARD_TYPES and cardsOf, the cards of one analysis.
import { Card } from "./card.js";
import { colourGrid, rangeOf } from "./colours.js";
import { $, format } from "./dom.js";
import { reflect } from "./geometry.js";
import { ReferenceCard, referenceBlock } from "./references.js";
import { MARGIN } from "./state.js";

class ContextCard extends Card {
  overlay() {
    const grid = this.grid();
    let best = [0, 0];
    grid.forEach((row, r) => row.forEach((v, c) => { if (v > grid[best[0]][best[1]]) best = [r, c]; }));
    const share = grid[best[0]][best[1]];
    this.detail(`The block pools ${(100 * share).toFixed(1)}% of its global context from cell (${best.join(", ")}).`);
  }
}

class CoordCard extends Card {
  hasMargins() { return true; }

  setup() {
    const channels = this.block.maps.a_h.length;
    this.channel = this.control("Channel", "channel", [["mean", "mean over channels"],
      ...Array.from({ length: channels }, (_, c) => [String(c), `channel ${c}`])]);
  }

  profiles() {
    const { maps } = this.block;
    if (this.channel.value === "mean") return [maps.a_h_mean, maps.a_w_mean];
    const c = Number(this.channel.value);
    return [maps.a_h[c], maps.a_w[c]];
  }

  grid() {
    if (this.channel.value === "mean") return this.block.heatmap.values;
    const [aH, aW] = this.profiles();
    return aH.map((h) => aW.map((w) => h * w));
  }

  overlay(context) {
    const [aH, aW] = this.profiles();
    // a profile in a band along the image's left or top edge (t in [0, 1] -> band(t) canvas pixels from the canvas'
    // edge), clipped to the image's extent: the rows / columns of a letterbox's padding would run into the corner
    const band = (t) => MARGIN - 4 - t * (MARGIN - 10);
    const plot = (values, toPoint, clip) => {
      const [low, high] = rangeOf([values]);
      const span = high > low ? high - low : 1;
      context.save();
      context.beginPath();
      context.rect(...clip);
      context.clip();
      context.beginPath();
      values.forEach((v, i) => {
        const [x, y] = toPoint(i, (v - low) / span);
        if (i === 0) context.moveTo(x, y); else context.lineTo(x, y);
      });
      context.strokeStyle = "#0b6bcb";
      context.lineWidth = 2;
      context.stroke();
      context.restore();
      return [low, high];
    };
    const v = this.view;
    const hRange = plot(aH, (i, t) => [band(t), v.cellCentre(i, 0, this.stride)[1]], [0, v.top, MARGIN, v.height]);
    const wRange = plot(aW, (i, t) => [v.cellCentre(0, i, this.stride)[0], band(t)], [v.left, 0, v.width, MARGIN]);
    // their names in the corner between the bands, where no curve runs: a_w pointing right, a_h down
    context.save();
    context.fillStyle = "#333";
    context.font = "600 11px system-ui, sans-serif";
    context.textBaseline = "middle";
    context.textAlign = "right";
    context.fillText("a_w\u2009→", MARGIN - 4, 12);
    context.textAlign = "center";
    context.fillText("a_h\u2009↓", (band(0) + band(1)) / 2, 29);
    context.restore();
    this.detail(`Height weights a_h in [${format(hRange[0])}, ${format(hRange[1])}] (left), ` +
      `width weights a_w in [${format(wRange[0])}, ${format(wRange[1])}] (top); 1 keeps a row / column fully.`);
  }
}

class WindowAttentionCard extends Card {
  setup() {
    const { maps } = this.block;
    this.head = this.control("Head", "head", [["mean", "mean over heads"],
      ...Array.from({ length: maps.heads }, (_, h) => [String(h), `head ${h}`])]);
    const mix = document.createElement("div");
    mix.className = "mix";
    const total = Math.abs(maps.rate1) + Math.abs(maps.rate2) || 1;
    const bar = document.createElement("span");
    bar.className = "bar";
    const share = document.createElement("span");
    share.style.width = `${(100 * Math.abs(maps.rate1)) / total}%`; // CSSOM, allowed by the page's CSP
    bar.append(share);
    mix.append(bar, ` attention ${format(maps.rate1)} · convolution ${format(maps.rate2)} (rate1 · rate2)`);
    $(".extra-controls", this.element).append(mix);
    const grid = maps.attention[0][0]; // (H', W') weights of one head and tap
    this.enableQueries(grid.length, grid[0].length, this.stride * maps.stride);
    this.detail("Click or hover a position to see where that query looks (its window weights).");
  }

  windowWeights(row, col) {
    const { attention, heads } = this.block.maps;
    const taps = attention[0].length;
    const weights = new Array(taps).fill(0);
    const chosen = this.head.value === "mean" ? [...Array(heads).keys()] : [Number(this.head.value)];
    for (const h of chosen) for (let t = 0; t < taps; t++) weights[t] += attention[h][t][row][col] / chosen.length;
    return weights;
  }

  overlay(context) {
    if (!this.selected) return;
    const [row, col] = this.selected;
    const { kernel_size: k, stride, dilation, input_size: [height, width] } = this.block.maps;
    const weights = this.windowWeights(row, col);
    const top = Math.max(...weights);
    const pad = (dilation * (k - 1)) >> 1;
    const cellW = this.stride * this.view.sx, cellH = this.stride * this.view.sy;
    context.save();
    for (let a = 0; a < k; a++) {
      for (let b = 0; b < k; b++) {
        const r = reflect(stride * row + dilation * a - pad, height);
        const c = reflect(stride * col + dilation * b - pad, width);
        const [x, y] = this.view.cellCentre(r, c, this.stride);
        const w = weights[a * k + b];
        context.fillStyle = `rgba(0, 220, 255, ${0.15 + 0.75 * (w / top)})`;
        context.fillRect(x - cellW / 2, y - cellH / 2, cellW, cellH);
        context.strokeStyle = "rgba(0, 0, 0, 0.35)";
        context.strokeRect(x - cellW / 2, y - cellH / 2, cellW, cellH);
      }
    }
    const [qx, qy] = this.view.cellCentre(stride * row, stride * col, this.stride);
    context.strokeStyle = "#ff2d55";
    context.lineWidth = 3;
    context.strokeRect(qx - cellW / 2, qy - cellH / 2, cellW, cellH);
    context.restore();
    this.element.dataset.windowCentre = `${Math.round(qx)},${Math.round(qy)}`;
    const head = this.head.value === "mean" ? "mean over heads" : `head ${this.head.value}`;
    this.detail(`Query (${row}, ${col}), ${head}: ${k}×${k} window; strongest weight ${format(top)} ` +
      `(uniform would be ${format(1 / (k * k))}). Cyan = weight, red = the query.`);
  }
}

class DeformCard extends Card {
  setup() {
    const offsets = this.block.maps.offsets; // (G, k*k, 2, H, W)
    this.enableQueries(offsets[0][0][0].length, offsets[0][0][0][0].length, this.stride);
    this.detail("Click or hover a position to draw its sampling points (hollow: regular grid, filled: moved).");
  }

  overlay(context) {
    if (!this.selected) return;
    const [row, col] = this.selected;
    const { offsets, mask, kernel_size: [kh, kw], stride, padding, dilation } = this.block.maps;
    const inputStride = this.stride / stride[0]; // input pixels per cell of the DCN's input map
    const toCanvas = (fy, fx) => this.view.cellCentre(fy, fx, inputStride);
    const colours = ["#ff2d55", "#34c759", "#0a84ff", "#ffd60a"];
    let moved = 0, count = 0;
    context.save();
    context.lineWidth = 1.5;
    offsets.forEach((group, g) => {
      const colour = colours[g % colours.length];
      for (let i = 0; i < kh; i++) {
        for (let j = 0; j < kw; j++) {
          const t = i * kw + j;
          const baseY = row * stride[0] - padding[0] + dilation[0] * i;
          const baseX = col * stride[1] - padding[1] + dilation[1] * j;
          const dy = group[t][0][row][col], dx = group[t][1][row][col];
          const [bx, by] = toCanvas(baseY, baseX);
          const [px, py] = toCanvas(baseY + dy, baseX + dx);
          const strength = mask ? mask[g][t][row][col] : 1;
          context.strokeStyle = colour;
          context.beginPath(); context.arc(bx, by, 3, 0, 2 * Math.PI); context.stroke();
          context.beginPath(); context.moveTo(bx, by); context.lineTo(px, py); context.stroke();
          context.fillStyle = colour;
          context.globalAlpha = 0.35 + 0.65 * strength;
          context.beginPath(); context.arc(px, py, 2 + 3 * strength, 0, 2 * Math.PI); context.fill();
          context.globalAlpha = 1;
          moved += Math.hypot(dy, dx); count += 1;
        }
      }
    });
    context.restore();
    const [cx, cy] = toCanvas(row * stride[0] - padding[0] + dilation[0] * ((kh - 1) / 2),
      col * stride[1] - padding[1] + dilation[1] * ((kw - 1) / 2));
    this.element.dataset.samplingCentre = `${Math.round(cx)},${Math.round(cy)}`;
    this.detail(`Output (${row}, ${col}): ${count} sampling points, moved ${format(moved / count)} input-feature ` +
      `pixels on average${mask ? "; dot size = DCNv2 modulation" : ""}` +
      `${moved === 0 ? " (zero offsets: this DCN samples the regular grid, like a plain convolution)" : ""}.`);
  }
}

class SpaceToDepthCard extends Card {
  setup() {
    const energy = this.block.maps.phase_energy; // (4, h, w)
    const strip = document.createElement("div");
    strip.className = "phases";
    const names = ["(0,0)", "(1,0)", "(0,1)", "(1,1)"];
    this.phaseCanvases = energy.map((grid, p) => {
      const figure = document.createElement("figure");
      const canvas = document.createElement("canvas");
      figure.append(canvas);
      const caption = document.createElement("figcaption");
      caption.textContent = `phase ${names[p]}: mean energy ${format(this.block.maps.phase_energy_mean[p])}`;
      figure.append(caption);
      strip.append(figure);
      return [canvas, grid];
    });
    this.element.querySelector(".legend").before(strip);
    this.detail("The four 2×2 phases space-to-depth stacks on channels; a stride-2 conv would keep one.");
  }

  phaseRange() { return rangeOf(this.block.maps.phase_energy.flat()); }

  overlay() {
    const range = this.pair ? this.pair.union((card) => card.phaseRange()) : this.phaseRange();
    for (const [canvas, grid] of this.phaseCanvases) {
      const source = colourGrid(grid, range, this.lut());
      canvas.width = 120;
      canvas.height = Math.round((120 * grid.length) / grid[0].length);
      const context = canvas.getContext("2d");
      context.imageSmoothingEnabled = true;
      context.drawImage(source, 0, 0, canvas.width, canvas.height);
    }
  }
}

const CARD_TYPES = { gc: ContextCard, ca: CoordCard, acmix: WindowAttentionCard, dcn: DeformCard, spd: SpaceToDepthCard,
  reference: ReferenceCard };

// the cards of one analysis: the reference (when asked for) first, then every block in network order
export function cardsOf(source) {
  const { report } = source;
  const blocks = report.reference ? [referenceBlock(report.reference), ...report.blocks] : report.blocks;
  return blocks.map((block) => new (CARD_TYPES[block.type])(block, source));
}
