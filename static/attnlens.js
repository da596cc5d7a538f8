// attnlens page: upload an image, draw every block's maps, click a pixel to see where it looks.
// Everything is computed in the browser from the /api/v1/analyze answers (include=values,maps), so
// clicks, hovers, colormap and opacity changes never go back to the server. With "Compare with", one
// image is analysed by two models and the cards of the same block are shown side by side, on one colour
// range, with their difference; clicks act on both sides.
"use strict";

const MARGIN = 44; // room for the CA height / width profiles, in canvas pixels
const MAX_VIEW = 520; // largest drawn image side, in CSS pixels
const SIDES = ["A", "B"];
const LISTED = 10; // detections listed before "show all"
const FEW = 5; // detections drawn on the cards when none is selected
// a served dataset's boxes, in colours apart from the heatmaps' colormaps: true positive, false positive, missed
const MATCH_COLOURS = { tp: "#00e5ff", fp: "#ff3df2", missed: "#ffffff" };

const state = {
  models: [], // GET /api/v1/models (or the one of GET /api/v1/model)
  model: null, // the description of the chosen model (side A)
  compare: null, // the description of the model compared with (side B), or null
  reference: "", // reference=METHOD: a reference map card (gradcam, gradcam++, layercam: a backward pass; eigencam)
  targetKind: "class", // detectors: what of the best detection the reference explains (class, box, all)
  luts: {}, // colormap name -> 256 [r, g, b]
  colormap: "inferno",
  opacity: 0.6,
  reports: [], // one /api/v1/analyze answer per side
  upload: null, // { blob, name } of the image shown, analysed again when the models change
  ticket: 0, // the latest analysis; older answers are dropped
  image: null, // HTMLImageElement of the upload (upright, like the server's decoding)
  cards: [],
  boxes: "auto", // detections drawn on the cards: auto (the selected one, else the best few), all, none
  highlighted: null, // { side, index } of the clicked detection
  hovered: null, // { side, index } of the detection under the pointer in a list
  allDetections: false, // the lists show every detection (else the first LISTED)
};

const $ = (selector, root = document) => root.querySelector(selector);

// ---------- small helpers ----------

function element(tag, text = "") {
  const node = document.createElement(tag);
  node.textContent = text;
  return node;
}

function modelName(model) { return model ? model.name : ""; }

function strideOf(model, id) {
  const block = model && model.blocks.find((b) => b.id === id);
  return block ? block.feature_stride : 1;
}

function reflect(index, size) {
  if (size === 1) return 0;
  const period = 2 * (size - 1);
  let i = ((index % period) + period) % period;
  return i >= size ? period - i : i;
}

// cells the server sends as null were not finite (NaN / inf): left out of ranges, drawn in MASKED grey
const MASKED = [128, 128, 128];

function rangeOf(grid) {
  let low = Infinity, high = -Infinity;
  for (const row of grid) for (const v of row) { if (v === null) continue; if (v < low) low = v; if (v > high) high = v; }
  return low <= high ? [low, high] : [0, 0];
}

function format(value) {
  if (value === null || value === undefined) return "n/a"; // not finite, or not reported (a fork's block without it)
  if (value === 0) return "0";
  const magnitude = Math.abs(value);
  return magnitude >= 1000 || magnitude < 0.001 ? value.toExponential(2) : value.toPrecision(3);
}

function union([a0, a1], [b0, b1]) { return [Math.min(a0, b0), Math.max(a1, b1)]; }

// 256 colours through evenly spaced [r, g, b] stops
function ramp(stops) {
  return Array.from({ length: 256 }, (_, i) => {
    const t = (i / 255) * (stops.length - 1);
    const k = Math.min(Math.floor(t), stops.length - 2);
    return stops[k].map((v, c) => Math.round(v + (t - k) * (stops[k + 1][c] - v)));
  });
}

// blue (below zero) - white - red (above), for differences
const DIVERGING = ramp([[5, 48, 97], [67, 147, 195], [247, 247, 247], [214, 96, 77], [103, 0, 31]]);

function colourGrid(grid, range, lut) {
  // values (h rows of w) -> an offscreen canvas, one pixel per cell, coloured by the lookup table
  const h = grid.length, w = grid[0].length;
  const canvas = document.createElement("canvas");
  canvas.width = w; canvas.height = h;
  const context = canvas.getContext("2d");
  const pixels = context.createImageData(w, h);
  const [low, high] = range || rangeOf(grid);
  const span = high > low ? high - low : 1;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const value = grid[y][x];
      const level = high > low ? Math.round(((value - low) / span) * 255) : 0;
      const [r, g, b] = value === null ? MASKED : lut[Math.max(0, Math.min(255, level))];
      const o = 4 * (y * w + x);
      pixels.data[o] = r; pixels.data[o + 1] = g; pixels.data[o + 2] = b; pixels.data[o + 3] = 255;
    }
  }
  context.putImageData(pixels, 0, 0);
  return canvas;
}

// ---------- geometry: map cells <-> canvas pixels ----------

class View {
  // The image drawn at (left, top) with size (width, height); input pixels -> canvas pixels. The image
  // lies in the model input at report.input.content = [x0, y0, x1, y1] (letterbox: inside grey padding).
  constructor(report, left, top, width, height) {
    this.left = left; this.top = top; this.width = width; this.height = height;
    const [x0, y0, x1, y1] = report.input.content;
    this.ox = x0; this.oy = y0;
    this.sx = width / (x1 - x0);
    this.sy = height / (y1 - y0);
    this.imageScale = [width / report.image.width, height / report.image.height];
  }
  // centre of cell (row, col) of a map with the given stride, in canvas pixels
  cellCentre(row, col, stride) {
    return [this.left + ((col + 0.5) * stride - this.ox) * this.sx, this.top + ((row + 0.5) * stride - this.oy) * this.sy];
  }
  // a box [x0, y0, x1, y1] in original-image pixels -> canvas [x, y, w, h]
  imageBox([x0, y0, x1, y1]) {
    const [kx, ky] = this.imageScale;
    return [this.left + x0 * kx, this.top + y0 * ky, (x1 - x0) * kx, (y1 - y0) * ky];
  }
  cellAt(x, y, stride, rows, cols) {
    const col = Math.floor(((x - this.left) / this.sx + this.ox) / stride);
    const row = Math.floor(((y - this.top) / this.sy + this.oy) / stride);
    if (row < 0 || col < 0 || row >= rows || col >= cols) return null;
    return [row, col];
  }
  // a map whose cells are [cellH, cellW] input pixels, from the input's top-left corner
  drawMap(context, grid, [cellH, cellW], range, lut) {
    const rows = grid.length, cols = grid[0].length;
    context.save();
    context.beginPath();
    context.rect(this.left, this.top, this.width, this.height);
    context.clip();
    context.globalAlpha = state.opacity;
    context.imageSmoothingEnabled = true;
    context.drawImage(colourGrid(grid, range, lut), this.left - this.ox * this.sx, this.top - this.oy * this.sy,
      cols * cellW * this.sx, rows * cellH * this.sy);
    context.restore();
  }
}

// ---------- one card per block ----------

class Card {
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
    this.setup();
  }

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
    const drawn = drawnIn(this.side, detections.length);
    const truth = this.side === null ? null : this.report.ground_truth;
    if (truth) this.element.dataset.groundTruth = JSON.stringify(drawGroundTruth(context, this.view, truth));
    drawDetections(context, this.view, detections, drawn, chosenIn(this.side), truth);
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

function sameCell(a, b) { return a && b && a[0] === b[0] && a[1] === b[1]; }

// a query cell of one grid -> the cell of another grid at the same input position
function translateCell([row, col], from, to) {
  if (from.rows === to.rows && from.cols === to.cols) return [row, col];
  const at = (index, count) => Math.max(0, Math.min(count - 1, Math.floor(((index + 0.5) * from.stride) / to.stride)));
  return [at(row, to.rows), at(col, to.cols)];
}

function overlap(a, b) {
  const w = Math.max(0, Math.min(a[2], b[2]) - Math.max(a[0], b[0]));
  const h = Math.max(0, Math.min(a[3], b[3]) - Math.max(a[1], b[1]));
  const area = (box) => (box[2] - box[0]) * (box[3] - box[1]);
  return (w * h) / (area(a) + area(b) - w * h || 1);
}

// the detection of a side that the pointer hovers, else the clicked one (on the other side: the box
// overlapping it most), or null
function chosenIn(side) { return matchedIn(side, state.hovered) ?? matchedIn(side, state.highlighted); }

// the highlighted (clicked) detection of a side
function highlightedIn(side) { return matchedIn(side, state.highlighted); }

// the indices of the detections drawn on a side's cards: the chosen one (auto), else the best few; all; none
function drawnIn(side, count) {
  if (state.boxes === "none" || side === null) return [];
  const indices = [...Array(count).keys()];
  if (state.boxes === "all") return indices;
  const chosen = chosenIn(side);
  return chosen !== null ? [chosen] : indices.slice(0, FEW);
}

function matchedIn(side, chosen) {
  if (!chosen || side === null || !state.reports[side]) return null;
  if (chosen.side === side) return chosen.index;
  const box = state.reports[chosen.side].detections[chosen.index].box;
  const overlaps = (state.reports[side].detections || []).map((d) => overlap(d.box, box));
  const best = Math.max(0, ...overlaps);
  return best >= 0.3 ? overlaps.indexOf(best) : null;
}

// a served dataset's labelled boxes: the missed ones (no detection matched) white and dashed, the found ones (and a
// classifier's, which are not matched) thin white; returns each box on the canvas with its status
function drawGroundTruth(context, view, truth) {
  context.save();
  const placed = truth.map((g) => {
    const [x, y, w, h] = view.imageBox(g.box);
    const missed = g.status === "missed";
    context.strokeStyle = MATCH_COLOURS.missed;
    context.lineWidth = missed ? 2.5 : 1;
    context.setLineDash(missed ? [6, 4] : []);
    context.strokeRect(x, y, w, h);
    return [...[x, y, w, h].map((v) => Math.round(v)), g.status || "labelled"];
  });
  context.restore();
  return placed;
}

// detections (boxes in original-image pixels) over a card's image: those drawn, the chosen one thicker, red;
// with ground truth, true positives (matched to a labelled box) cyan and false positives magenta
function drawDetections(context, view, detections, drawn, chosen, truth = null) {
  const matched = truth ? new Set(truth.filter((g) => g.status === "found").map((g) => g.detection)) : null;
  context.save();
  context.font = "11px system-ui, sans-serif";
  for (const i of drawn) {
    const detection = detections[i];
    const [x, y, w, h] = view.imageBox(detection.box);
    const highlighted = chosen === i;
    const plain = !matched ? "#00ff7f" : matched.has(i) ? MATCH_COLOURS.tp : MATCH_COLOURS.fp;
    context.strokeStyle = highlighted ? "#ff2d55" : plain;
    context.lineWidth = highlighted ? 3 : 1.5;
    context.strokeRect(x, y, w, h);
    if (highlighted || drawn.length <= FEW) {
      const text = `${detection.label} ${detection.score.toFixed(2)}`;
      const textWidth = context.measureText(text).width + 4;
      context.fillStyle = context.strokeStyle;
      context.fillRect(x, Math.max(0, y - 14), textWidth, 14);
      context.fillStyle = "#000";
      context.fillText(text, x + 2, Math.max(0, y - 14) + 11);
    }
  }
  context.restore();
}

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
    const plot = (values, along, toPoint) => {
      const [low, high] = rangeOf([values]);
      const span = high > low ? high - low : 1;
      context.beginPath();
      values.forEach((v, i) => {
        const [x, y] = toPoint(i, (v - low) / span);
        if (i === 0) context.moveTo(x, y); else context.lineTo(x, y);
      });
      context.strokeStyle = "#0b6bcb";
      context.lineWidth = 2;
      context.stroke();
      return [low, high];
    };
    const v = this.view;
    const hRange = plot(aH, "rows", (i, t) => [MARGIN - 4 - t * (MARGIN - 10), v.cellCentre(i, 0, this.stride)[1]]);
    const wRange = plot(aW, "cols", (i, t) => [v.cellCentre(0, i, this.stride)[0], MARGIN - 4 - t * (MARGIN - 10)]);
    context.fillStyle = "#333";
    context.font = "10px system-ui, sans-serif";
    context.fillText("a_w", MARGIN + 2, 10);
    context.save();
    context.translate(10, MARGIN + 24);
    context.rotate(-Math.PI / 2);
    context.fillText("a_h", 0, 0);
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

// the reference map (reference=METHOD): Grad-CAM, Grad-CAM++, LayerCAM or EigenCAM over the model input at the
// finest of its layers, drawn like a block's
class ReferenceCard extends Card {
  title() {
    const { method, layers, target } = this.block.reference;
    const side = this.compare ? `${SIDES[this.side]} · ` : "";
    const where = layers.length === 1 ? `layer ${layers[0]}` : `${layers.length} layers ${layers.join(", ")}`;
    const kind = target && target.kind !== "class" ? ` (${target.kind === "box" ? "box" : "class + box"})` : "";
    const what = !target ? "no target" : "rank" in target ? `target ${target.label}, detection ${target.rank}${kind}`
      : `target ${target.label}, class ${target.index}`;
    return `${side}${methodOption(method)?.textContent || method} reference (${where}, ${what})`;
  }

  cellSize() {
    const [rows, cols] = this.block.heatmap.shape;
    return [this.report.input.height / rows, this.report.input.width / cols];
  }

  fileName() {
    const method = this.block.reference.method.replace("++", "pp");
    return this.compare ? `${modelName(this.model)}-${method}` : method;
  }
}

// the page's reference methods (rendered from the server's list) and whether one explains a target by gradients
function methodOption(method) { return [...$("#reference").options].find((option) => option.value === method); }
function usesGradients(method) { return methodOption(method)?.dataset.gradients === "true"; }

function referenceBlock(reference) {
  return { id: "reference", type: "reference", heatmap: reference.heatmap, maps: {}, reference };
}

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

const CARD_TYPES = { gc: ContextCard, ca: CoordCard, acmix: WindowAttentionCard, dcn: DeformCard, spd: SpaceToDepthCard,
  reference: ReferenceCard };

// the cards of one analysis: the reference (when asked for) first, then every block in network order
function cardsOf(source) {
  const { report } = source;
  const blocks = report.reference ? [referenceBlock(report.reference), ...report.blocks] : report.blocks;
  return blocks.map((block) => new (CARD_TYPES[block.type])(block, source));
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

// ---------- page flow ----------

function saveBlob(blob, name) {
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = name;
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
}

function setStatus(text, kind = "") {
  const status = $("#status");
  status.textContent = text;
  status.className = `status ${kind}`;
}

const ERROR_MESSAGES = {
  400: "This file could not be read as an image",
  404: "The server does not offer this model",
  413: "This image is too large",
  415: "This is not an image type attnlens reads (JPEG, PNG, WebP, GIF, TIFF, BMP)",
  503: "The server is busy",
};

async function explain(response) {
  let detail = "";
  try { detail = (await response.json()).detail; } catch (error) { detail = response.statusText; }
  if (typeof detail !== "string") detail = JSON.stringify(detail);
  const retry = response.headers.get("Retry-After");
  const lead = ERROR_MESSAGES[response.status] || `The server answered ${response.status}`;
  return `${lead}: ${detail}${retry ? ` (try again in ${retry} s)` : ""}.`;
}

async function loadImage(blob) {
  const image = new Image();
  image.src = URL.createObjectURL(blob);
  await image.decode();
  return image;
}

// ---------- models ----------

// the models the server offers (none while it is still loading: asked again at the first analysis)
async function loadModels() {
  const response = await fetch("/api/v1/models");
  if (!response.ok) return;
  const { default: preferred, models } = await response.json();
  state.models = models;
  state.model = models.find((m) => m.name === preferred) || models[0];
  offerModels();
}

function offerModels() {
  const names = state.models.map(modelName);
  const several = names.length > 1;
  $("#model-pick").hidden = !several;
  $("#compare-pick").hidden = !several;
  $("#model").replaceChildren(...names.map((name) => new Option(name, name)));
  $("#model").value = modelName(state.model);
  $("#compare").replaceChildren(new Option("nothing", ""), ...names.map((name) => {
    const option = new Option(name, name);
    option.disabled = name === modelName(state.model);
    return option;
  }));
  $("#compare").value = modelName(state.compare);
  describeModels();
}

// one model in words: what the server-rendered line says, for the model chosen now
function modelSummary(model, lead) {
  const { resize, size, normalize } = model.input;
  const nodes = [lead, element("code", modelName(model)), " on ", element("code", model.device), " · task ",
    element("strong", model.task), ` · input ${resize} ${size}, normalize ${normalize}`,
    ` · ${model.blocks.length} blocks`];
  if (!model.blocks.length) { // nothing recognised: say how to name one
    return [...nodes, ": ", element("strong", "no block recognised"), " (name one with ",
      element("code", "--block MODULE=KIND"), "; ", element("code", "attnlens blocks --model …"),
      " lists what was seen)"];
  }
  // blocks_trained: true / false for the built-in models, null where the server cannot know (yours)
  const untrained = [element("strong", "untrained"), ": their maps show initial weights"];
  const blocks = model.blocks_trained === true ? ["trained (see the model card in the README)"]
    : model.blocks_trained === false ? untrained : ["as in your model"];
  return [...nodes, ", ", ...blocks];
}

function describeModels() {
  const detector = [state.model, state.compare].some((model) => model && model.task === "detect");
  $("#target-kind-pick").hidden = !detector || !usesGradients(state.reference);
  if (!state.model) return; // the server-rendered line stays (the model is loading)
  const api = element("a", "API");
  api.href = "/docs";
  const compared = state.compare ? [element("br"), ...modelSummary(state.compare, "Compared with ")] : [];
  $("#model-line").replaceChildren(...modelSummary(state.model, "Model "), ...compared, " · ", api);
}

function modelNamed(name) { return state.models.find((m) => modelName(m) === name) || null; }

// ---------- analyses ----------

function analyzeUrl(model) {
  const params = new URLSearchParams({ include: "values,maps" });
  if (state.reference) params.set("reference", state.reference);
  if (usesGradients(state.reference) && model && model.task === "detect" && state.targetKind !== "class") {
    params.set("target_kind", state.targetKind);
  }
  if (state.models.length > 1 && model) params.set("model", modelName(model));
  return `/api/v1/analyze?${params}`;
}

// one analysis by one model: of the upload, or of a served dataset's image by id (the answer adds ground_truth)
async function request(model, blob, name, labelled) {
  const form = new FormData();
  let url = analyzeUrl(model);
  if (labelled) url += `&${new URLSearchParams({ dataset: labelled.dataset, image: labelled.id })}`;
  else form.append("file", blob, name);
  const response = await fetch(url, { method: "POST", body: form });
  if (!response.ok) throw new Error(await explain(response), { cause: "server" });
  return response.json();
}

// labelled: { dataset, id } of a served dataset's image (its ground truth drawn on the cards), else null
async function analyze(blob, name = "image", labelled = null) {
  const ticket = ++state.ticket;
  state.upload = { blob, name, labelled };
  document.body.classList.add("busy");
  $("#results").setAttribute("aria-busy", "true");
  setStatus(`Analysing ${name}${state.compare ? " with both models" : ""}…`, "busy");
  try {
    if (!state.models.length) await loadModels();
    const sides = state.compare ? [state.model, state.compare] : [state.model];
    const reports = await Promise.all(sides.map((model) => request(model, blob, name, labelled)));
    let image;
    try {
      image = await loadImage(blob);
    } catch (error) {
      setStatus("The server read this image, but this browser cannot display it (try JPEG or PNG).", "error");
      return;
    }
    if (ticket !== state.ticket) return; // a newer analysis was asked for meanwhile
    state.reports = reports;
    state.image = image;
    state.highlighted = state.hovered = null;
    state.allDetections = false;
    document.body.dataset.highlighted = document.body.dataset.hovered = "";
    show(reports, sides);
    setStatus(`${name}: ${bySide(reports, headline).join(" · ")}.`, "done");
  } catch (error) {
    if (ticket !== state.ticket) return;
    setStatus(error.cause === "server" ? error.message : `Could not reach the server: ${error.message}.`, "error");
  } finally {
    if (ticket === state.ticket) {
      document.body.classList.remove("busy");
      $("#results").removeAttribute("aria-busy");
    }
  }
}

function reanalyze() { if (state.upload) analyze(state.upload.blob, state.upload.name, state.upload.labelled); }

// what the model answered, in a few words
function headline(report) {
  if (report.task === "classify") {
    const top = report.predictions[0];
    return `${top.label} (${(100 * top.score).toFixed(1)}%)`;
  }
  if (report.task === "detect") {
    const found = report.detections;
    return found.length ? `${found.length} detection${found.length === 1 ? "" : "s"}, best ${found[0].label} ` +
      `(${(100 * found[0].score).toFixed(1)}%)` : "no detections above the confidence threshold";
  }
  return "maps only (no predictions read)";
}

function scoreItem(label, score) {
  const item = document.createElement("li");
  item.innerHTML = `<span class="label"></span><span class="bar"><span></span></span><span class="score"></span>`;
  $(".label", item).textContent = label;
  $(".bar > span", item).style.width = `${(100 * score).toFixed(1)}%`;
  $(".score", item).textContent = `${(100 * score).toFixed(1)}%`;
  return item;
}

// the predictions or detections of one side (#answer-a, #answer-b) by the model asked
function showAnswer(report, side, model, compare) {
  const root = $(`#answer-${SIDES[side].toLowerCase()}`);
  root.hidden = false;
  $(".answer-model", root).hidden = !compare;
  $(".answer-model", root).textContent = `${SIDES[side]} · ${modelName(model)}`;
  const titles = { classify: "Predictions", detect: "Detections", maps: "No predictions" };
  $(".answer-title", root).textContent = titles[report.task];
  $(".note", root).textContent = report.note || "";
  showTruth($(".truth", root), report);
  const list = $(".predictions", root);
  list.classList.toggle("detect", report.task === "detect");
  if (report.task === "classify") {
    list.replaceChildren(...report.predictions.map((p) => scoreItem(p.label, p.score)));
    $(".more-detections", root).hidden = true;
    return;
  }
  const detections = report.detections || [];
  const listed = state.allDetections ? detections : detections.slice(0, LISTED);
  list.replaceChildren(...listed.map((d, i) => {
    const item = scoreItem(d.label, d.score);
    const button = document.createElement("button");
    button.type = "button";
    button.className = "detection";
    button.dataset.index = String(i);
    button.textContent = `[${d.box.map((v) => Math.round(v)).join(", ")}]`;
    button.title = "highlight this box on every card";
    button.addEventListener("click", () => highlight(side, i));
    item.addEventListener("pointerenter", () => hover({ side, index: i }));
    item.addEventListener("pointerleave", () => hover(null));
    button.addEventListener("focus", () => hover({ side, index: i }));
    button.addEventListener("blur", () => hover(null));
    item.append(button);
    return item;
  }));
  const more = $(".more-detections", root);
  more.hidden = detections.length <= LISTED;
  more.textContent = state.allDetections ? `show the first ${LISTED}` : `show all ${detections.length}`;
  list.classList.toggle("all", state.allDetections);
  markChosen();
}

// a served dataset's image: how its labelled boxes and the detections matched, with the colours' key
function showTruth(paragraph, report) {
  const truth = report.ground_truth;
  paragraph.hidden = !truth;
  if (!truth) return;
  const plural = `${truth.length} labelled box${truth.length === 1 ? "" : "es"}`;
  if (!report.detections) { // a classifier's answer has no boxes: nothing to match the labelled ones to
    paragraph.replaceChildren(`Ground truth: ${plural}, not matched: this model gives no boxes (task ${report.task}).`);
    paragraph.dataset.found = paragraph.dataset.missed = paragraph.dataset.falsePositives = "";
    return;
  }
  const found = truth.filter((g) => g.status === "found").length;
  const falsePositives = report.detections.length - found;
  const key = (colour, text) => {
    const span = element("span", text);
    span.className = "key";
    span.style.setProperty("--key", colour);
    return span;
  };
  paragraph.replaceChildren(`Ground truth: ${plural} (IoU ≥ 0.5): `,
    key(MATCH_COLOURS.tp, `${found} found`), ", ", key(MATCH_COLOURS.missed, `${truth.length - found} missed`), ", ",
    key(MATCH_COLOURS.fp, `${falsePositives} false positive${falsePositives === 1 ? "" : "s"}`), ".");
  paragraph.dataset.found = String(found);
  paragraph.dataset.missed = String(truth.length - found);
  paragraph.dataset.falsePositives = String(falsePositives);
}

// the clicked detection (and its match on the other side) marked in the lists
function markChosen() {
  state.reports.forEach((_, s) => {
    const shown = highlightedIn(s);
    for (const button of document.querySelectorAll(`#answer-${SIDES[s].toLowerCase()} .detection`)) {
      button.classList.toggle("on", Number(button.dataset.index) === shown);
    }
  });
}

function highlight(side, index) {
  const chosen = state.highlighted;
  state.highlighted = chosen && chosen.side === side && chosen.index === index ? null : { side, index };
  markChosen();
  document.body.dataset.highlighted = state.highlighted ? `${side ? "B" : ""}${index}` : "";
  redraw();
}

// the pointer over a listed detection: its box (and its match on the other side) drawn, red, on every card
function hover(hovered) {
  const same = (a, b) => a === b || (a && b && a.side === b.side && a.index === b.index);
  if (same(state.hovered, hovered)) return;
  state.hovered = hovered;
  document.body.dataset.hovered = hovered ? `${hovered.side ? "B" : ""}${hovered.index}` : "";
  redraw();
}

function toggleAllDetections() {
  state.allDetections = !state.allDetections;
  state.reports.forEach((report, side) => showAnswer(report, side, side ? state.compare : state.model,
    state.reports.length > 1));
}

function timings(report) {
  const t = report.timings_ms;
  return `${Math.round(t.total)} ms (forward ${Math.round(t.forward)} ms); ` +
    `input ${report.input.width}×${report.input.height}`;
}

// one text per answer, labelled A and B when comparing
function bySide(reports, describe) {
  return reports.map((report, side) => `${reports.length > 1 ? `${SIDES[side]} ` : ""}${describe(report)}`);
}

function show(reports, sides) {
  const compare = reports.length > 1;
  reports.forEach((report, side) => showAnswer(report, side, sides[side], compare));
  $("#answer-b").hidden = !compare;
  $("#boxes-pick").hidden = !reports.some((r) => r.task === "detect");
  $("#timings").textContent = `Server: ${bySide(reports, timings).join("; ")}.`;
  $("#results").hidden = false;
  const decks = reports.map((report, side) => cardsOf({ report, model: sides[side], side, compare }));
  const cards = $("#cards");
  cards.classList.toggle("compare", compare);
  if (compare) {
    const rows = pairUp(...decks).map(([a, b]) => [a, b, a && b ? new Pair(a, b).difference : null]);
    state.cards = rows.flat().filter(Boolean);
    cards.replaceChildren(compareHeader(sides), ...rows.map(compareRow));
  } else {
    state.cards = decks[0];
    cards.replaceChildren(...state.cards.map((card) => card.element));
  }
  redraw();
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

function redraw() { for (const card of state.cards) card.draw(); }

async function init() {
  const [colormaps] = await Promise.all([fetch("/api/v1/colormaps").then((r) => r.json()), loadModels()]);
  state.luts = colormaps.colormaps;
  const select = $("#colormap");
  for (const name of Object.keys(state.luts)) select.append(new Option(name, name));
  select.value = state.colormap;
  select.addEventListener("change", () => { state.colormap = select.value; redraw(); });
  $("#opacity").addEventListener("input", (event) => { state.opacity = Number(event.target.value); redraw(); });
  $("#boxes").addEventListener("change", (event) => { state.boxes = event.target.value; redraw(); });
  for (const button of document.querySelectorAll(".more-detections")) button.addEventListener("click", toggleAllDetections);
  $("#model").addEventListener("change", (event) => {
    state.model = modelNamed(event.target.value);
    if (state.compare === state.model) state.compare = null;
    offerModels();
    reanalyze();
  });
  $("#compare").addEventListener("change", (event) => {
    state.compare = modelNamed(event.target.value);
    describeModels();
    reanalyze();
  });
  $("#reference").addEventListener("change", (event) => {
    state.reference = event.target.value;
    describeModels();
    reanalyze();
  });
  $("#target-kind").addEventListener("change", (event) => { state.targetKind = event.target.value; reanalyze(); });

  const input = $("#file-input");
  input.addEventListener("change", () => { if (input.files[0]) analyze(input.files[0], input.files[0].name); });
  const zone = $("#drop-zone");
  zone.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") { event.preventDefault(); input.click(); }
  });
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    const file = event.dataTransfer.files[0];
    if (file) analyze(file, file.name);
  });
  document.addEventListener("paste", (event) => {
    const item = [...event.clipboardData.items].find((i) => i.kind === "file");
    if (item) analyze(item.getAsFile(), "pasted image");
  });
  for (const button of document.querySelectorAll(".sample")) {
    button.addEventListener("click", async () => {
      const response = await fetch(button.dataset.src);
      analyze(await response.blob(), button.textContent);
    });
  }
  $("#download-json").addEventListener("click", () => {
    const body = state.reports.length > 1 ? state.reports : state.reports[0];
    saveBlob(new Blob([JSON.stringify(body)], { type: "application/json" }), "attnlens.json");
  });
  let resizeTimer;
  window.addEventListener("resize", () => { clearTimeout(resizeTimer); resizeTimer = setTimeout(redraw, 150); });
  document.body.dataset.ready = "true";
}

document.addEventListener("DOMContentLoaded", () => {
  init().catch((error) => setStatus(`The page could not start: ${error.message}`, "error"));
});
