// attnlens page: upload an image, draw every block's maps, click a pixel to see where it looks.
// Everything is computed in the browser from one /api/v1/analyze answer (include=values,maps), so
// clicks, hovers, colormap and opacity changes never go back to the server.
"use strict";

const MARGIN = 44; // room for the CA height / width profiles, in canvas pixels
const MAX_VIEW = 520; // largest drawn image side, in CSS pixels

const state = {
  model: null, // GET /api/v1/model
  luts: {}, // colormap name -> 256 [r, g, b]
  colormap: "inferno",
  opacity: 0.6,
  report: null,
  image: null, // HTMLImageElement of the upload (upright, like the server's decoding)
  cards: [],
  showBoxes: true, // detections drawn on every card
  highlighted: null, // index of the clicked detection
};

const $ = (selector, root = document) => root.querySelector(selector);

// ---------- small helpers ----------

function strideOf(id) {
  const block = state.model && state.model.blocks.find((b) => b.id === id);
  return block ? block.feature_stride : 1;
}

function reflect(index, size) {
  if (size === 1) return 0;
  const period = 2 * (size - 1);
  let i = ((index % period) + period) % period;
  return i >= size ? period - i : i;
}

function rangeOf(grid) {
  let low = Infinity, high = -Infinity;
  for (const row of grid) for (const v of row) { if (v < low) low = v; if (v > high) high = v; }
  return [low, high];
}

function format(value) {
  if (value === 0) return "0";
  const magnitude = Math.abs(value);
  return magnitude >= 1000 || magnitude < 0.001 ? value.toExponential(2) : value.toPrecision(3);
}

function colourGrid(grid, range) {
  // values (h rows of w) -> an offscreen canvas, one pixel per cell, coloured by the current colormap
  const lut = state.luts[state.colormap];
  const h = grid.length, w = grid[0].length;
  const canvas = document.createElement("canvas");
  canvas.width = w; canvas.height = h;
  const context = canvas.getContext("2d");
  const pixels = context.createImageData(w, h);
  const [low, high] = range || rangeOf(grid);
  const span = high > low ? high - low : 1;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const level = high > low ? Math.round(((grid[y][x] - low) / span) * 255) : 0;
      const [r, g, b] = lut[Math.max(0, Math.min(255, level))];
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
  drawMap(context, grid, stride, range) {
    const rows = grid.length, cols = grid[0].length;
    context.save();
    context.beginPath();
    context.rect(this.left, this.top, this.width, this.height);
    context.clip();
    context.globalAlpha = state.opacity;
    context.imageSmoothingEnabled = true;
    context.drawImage(colourGrid(grid, range), this.left - this.ox * this.sx, this.top - this.oy * this.sy,
      cols * stride * this.sx, rows * stride * this.sy);
    context.restore();
  }
}

// ---------- one card per block ----------

class Card {
  constructor(block, report) {
    this.block = block;
    this.report = report;
    this.stride = strideOf(block.id);
    this.selected = null; // [row, col] of the clicked / hovered query
    this.element = $("#card-template").content.firstElementChild.cloneNode(true);
    this.element.dataset.blockId = block.id;
    this.element.dataset.type = block.type;
    this.canvas = $(".view", this.element);
    $(".card-title", this.element).textContent = `${block.id} — ${block.type.toUpperCase()} · stride ${this.stride}`;
    $(".meaning", this.element).textContent = block.heatmap.meaning;
    $(".unit", this.element).textContent = block.heatmap.unit;
    $(".download-png", this.element).addEventListener("click", () => this.download());
    this.setup();
  }

  setup() {}
  hasMargins() { return false; }
  grid() { return this.block.heatmap.values; }
  overlay() {} // drawn over the map (selections)

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
    const range = rangeOf(grid);
    this.view.drawMap(context, grid, this.stride, range);
    this.overlay(context);
    if (state.showBoxes) drawDetections(context, this.view, this.report.detections || []);
    this.element.dataset.boxes = JSON.stringify((this.report.detections || []).map((d) => this.view.imageBox(d.box)
      .map((v) => Math.round(v))));
    this.legend(range);
  }

  legend([low, high]) {
    const bar = $(".colorbar", this.element).getContext("2d");
    const lut = state.luts[state.colormap];
    for (let i = 0; i < 256; i++) {
      bar.fillStyle = `rgb(${lut[i].join(",")})`;
      bar.fillRect(i, 0, 1, 10);
    }
    $(".low", this.element).textContent = format(low);
    $(".high", this.element).textContent = format(high);
  }

  detail(text) { $(".detail", this.element).textContent = text; }

  download() {
    this.canvas.toBlob((blob) => saveBlob(blob, `${this.block.id}.png`), "image/png");
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

  select(cell) {
    const started = performance.now();
    this.selected = cell;
    this.draw();
    this.element.dataset.selected = cell.join(",");
    this.element.dataset.selectMs = (performance.now() - started).toFixed(1);
  }
}

function sameCell(a, b) { return a && b && a[0] === b[0] && a[1] === b[1]; }

// detections (boxes in original-image pixels) over a card's image; the highlighted one thicker, labelled
function drawDetections(context, view, detections) {
  context.save();
  context.font = "11px system-ui, sans-serif";
  detections.forEach((detection, i) => {
    const [x, y, w, h] = view.imageBox(detection.box);
    const highlighted = state.highlighted === i;
    context.strokeStyle = highlighted ? "#ff2d55" : "#00ff7f";
    context.lineWidth = highlighted ? 3 : 1.5;
    context.strokeRect(x, y, w, h);
    if (highlighted || state.highlighted === null) {
      const text = `${detection.label} ${detection.score.toFixed(2)}`;
      const textWidth = context.measureText(text).width + 4;
      context.fillStyle = context.strokeStyle;
      context.fillRect(x, Math.max(0, y - 14), textWidth, 14);
      context.fillStyle = "#000";
      context.fillText(text, x + 2, Math.max(0, y - 14) + 11);
    }
  });
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
    const label = document.createElement("label");
    label.textContent = "Channel ";
    this.channel = document.createElement("select");
    this.channel.append(new Option("mean over channels", "mean"));
    for (let c = 0; c < channels; c++) this.channel.append(new Option(`channel ${c}`, String(c)));
    this.channel.addEventListener("change", () => this.draw());
    label.append(this.channel);
    $(".extra-controls", this.element).append(label);
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
    const label = document.createElement("label");
    label.textContent = "Head ";
    this.head = document.createElement("select");
    this.head.append(new Option("mean over heads", "mean"));
    for (let h = 0; h < maps.heads; h++) this.head.append(new Option(`head ${h}`, String(h)));
    this.head.addEventListener("change", () => this.draw());
    label.append(this.head);
    const mix = document.createElement("div");
    mix.className = "mix";
    const total = Math.abs(maps.rate1) + Math.abs(maps.rate2) || 1;
    const bar = document.createElement("span");
    bar.className = "bar";
    const share = document.createElement("span");
    share.style.width = `${(100 * Math.abs(maps.rate1)) / total}%`; // CSSOM, allowed by the page's CSP
    bar.append(share);
    mix.append(bar, ` attention ${format(maps.rate1)} · convolution ${format(maps.rate2)} (rate1 · rate2)`);
    $(".extra-controls", this.element).append(label, mix);
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
    const [low, high] = rangeOf(energy.flat());
    this.phaseCanvases = energy.map((grid, p) => {
      const figure = document.createElement("figure");
      const canvas = document.createElement("canvas");
      figure.append(canvas);
      const caption = document.createElement("figcaption");
      caption.textContent = `phase ${names[p]}: mean energy ${format(this.block.maps.phase_energy_mean[p])}`;
      figure.append(caption);
      strip.append(figure);
      return [canvas, grid, [low, high]];
    });
    this.element.querySelector(".legend").before(strip);
    this.detail("The four 2×2 phases space-to-depth stacks on channels; a stride-2 conv would keep one.");
  }

  overlay() {
    for (const [canvas, grid, range] of this.phaseCanvases) {
      const source = colourGrid(grid, range);
      canvas.width = 120;
      canvas.height = Math.round((120 * grid.length) / grid[0].length);
      const context = canvas.getContext("2d");
      context.imageSmoothingEnabled = true;
      context.drawImage(source, 0, 0, canvas.width, canvas.height);
    }
  }
}

const CARD_TYPES = { gc: ContextCard, ca: CoordCard, acmix: WindowAttentionCard, dcn: DeformCard, spd: SpaceToDepthCard };

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

async function analyze(blob, name = "image") {
  document.body.classList.add("busy");
  $("#results").setAttribute("aria-busy", "true");
  setStatus(`Analysing ${name}…`, "busy");
  try {
    const form = new FormData();
    form.append("file", blob, name);
    const response = await fetch("/api/v1/analyze?include=values,maps", { method: "POST", body: form });
    if (!response.ok) {
      setStatus(await explain(response), "error");
      return;
    }
    const report = await response.json();
    let image;
    try {
      image = await loadImage(blob);
    } catch (error) {
      setStatus("The server read this image, but this browser cannot display it (try JPEG or PNG).", "error");
      return;
    }
    state.report = report;
    state.image = image;
    state.highlighted = null;
    show(report);
    setStatus(`${name}: ${headline(report)}.`, "done");
  } catch (error) {
    setStatus(`Could not reach the server: ${error.message}.`, "error");
  } finally {
    document.body.classList.remove("busy");
    $("#results").removeAttribute("aria-busy");
  }
}

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

function showAnswer(report) {
  const list = $("#predictions");
  $("#answer-title").textContent = { classify: "Predictions", detect: "Detections", maps: "No predictions" }[report.task];
  $("#boxes-toggle").hidden = report.task !== "detect";
  $("#note").textContent = report.note || "";
  if (report.task === "classify") {
    list.replaceChildren(...report.predictions.map((p) => scoreItem(p.label, p.score)));
    return;
  }
  list.replaceChildren(...(report.detections || []).map((d, i) => {
    const item = scoreItem(d.label, d.score);
    const button = document.createElement("button");
    button.type = "button";
    button.className = "detection";
    button.textContent = `[${d.box.map((v) => Math.round(v)).join(", ")}]`;
    button.title = "highlight this box on every card";
    button.addEventListener("click", () => {
      state.highlighted = state.highlighted === i ? null : i;
      for (const other of list.querySelectorAll(".detection")) other.classList.remove("on");
      if (state.highlighted !== null) button.classList.add("on");
      document.body.dataset.highlighted = state.highlighted === null ? "" : String(i);
      redraw();
    });
    item.append(button);
    return item;
  }));
}

function show(report) {
  showAnswer(report);
  const t = report.timings_ms;
  $("#timings").textContent = `Server: ${Math.round(t.total)} ms (forward ${Math.round(t.forward)} ms); ` +
    `input ${report.input.width}×${report.input.height}.`;
  $("#results").hidden = false;
  const cards = $("#cards");
  state.cards = report.blocks.map((block) => new (CARD_TYPES[block.type])(block, report));
  cards.replaceChildren(...state.cards.map((card) => card.element));
  redraw();
}

function redraw() { for (const card of state.cards) card.draw(); }

async function init() {
  const [model, colormaps] = await Promise.all([
    fetch("/api/v1/model").then((r) => (r.ok ? r.json() : null)),
    fetch("/api/v1/colormaps").then((r) => r.json()),
  ]);
  state.model = model;
  state.luts = colormaps.colormaps;
  const select = $("#colormap");
  for (const name of Object.keys(state.luts)) select.append(new Option(name, name));
  select.value = state.colormap;
  select.addEventListener("change", () => { state.colormap = select.value; redraw(); });
  $("#opacity").addEventListener("input", (event) => { state.opacity = Number(event.target.value); redraw(); });
  $("#show-boxes").addEventListener("change", (event) => { state.showBoxes = event.target.checked; redraw(); });

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
    saveBlob(new Blob([JSON.stringify(state.report)], { type: "application/json" }), "attnlens.json");
  });
  let resizeTimer;
  window.addEventListener("resize", () => { clearTimeout(resizeTimer); resizeTimer = setTimeout(redraw, 150); });
  document.body.dataset.ready = "true";
}

document.addEventListener("DOMContentLoaded", () => {
  init().catch((error) => setStatus(`The page could not start: ${error.message}`, "error"));
});
