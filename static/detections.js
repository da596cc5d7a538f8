// attnlens page: the answer panels (#answer-a, #answer-b: predictions, or detections with their buttons) and the
// boxes on the cards: which detections each side draws (the hovered or clicked one, matched by overlap on the other
// side, else the best few), a served dataset's ground truth and its matching colours, the colours' key; the
// detections lost without a block's preference (a card's knockout shown) struck out in the list, dashed on the card.
import { $, element } from "./dom.js";
import { modelName } from "./models.js";
import { FEW, LISTED, LOST_COLOUR, MATCH_COLOURS, SIDES, redraw, state } from "./state.js";

function overlap(a, b) {
  const w = Math.max(0, Math.min(a[2], b[2]) - Math.max(a[0], b[0]));
  const h = Math.max(0, Math.min(a[3], b[3]) - Math.max(a[1], b[1]));
  const area = (box) => (box[2] - box[0]) * (box[3] - box[1]);
  return (w * h) / (area(a) + area(b) - w * h || 1);
}

function matchedIn(side, chosen) {
  if (!chosen || side === null || !state.reports[side]) return null;
  if (chosen.side === side) return chosen.index;
  const box = state.reports[chosen.side].detections[chosen.index].box;
  const overlaps = (state.reports[side].detections || []).map((d) => overlap(d.box, box));
  const best = Math.max(0, ...overlaps);
  return best >= 0.3 ? overlaps.indexOf(best) : null;
}

// the detection of a side that the pointer hovers, else the clicked one (on the other side: the box
// overlapping it most), or null
export function chosenIn(side) { return matchedIn(side, state.hovered) ?? matchedIn(side, state.highlighted); }

// the highlighted (clicked) detection of a side
function highlightedIn(side) { return matchedIn(side, state.highlighted); }

// the indices of the detections drawn on a side's cards: the chosen one (auto), else the best few; all; none
export function drawnIn(side, count) {
  if (state.boxes === "none" || side === null) return [];
  const indices = [...Array(count).keys()];
  if (state.boxes === "all") return indices;
  const chosen = chosenIn(side);
  return chosen !== null ? [chosen] : indices.slice(0, FEW);
}

// a served dataset's labelled boxes: the missed ones (no detection matched) white and dashed, the found ones (and a
// classifier's, which are not matched) thin white; returns each box on the canvas with its status
export function drawGroundTruth(context, view, truth) {
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
// with ground truth, true positives (matched to a labelled box) cyan and false positives magenta; lost (a Set: those
// the card's knockout loses) orange and dashed
export function drawDetections(context, view, detections, drawn, chosen, truth = null, lost = new Set()) {
  const matched = truth ? new Set(truth.filter((g) => g.status === "found").map((g) => g.detection)) : null;
  context.save();
  context.font = "11px system-ui, sans-serif";
  for (const i of drawn) {
    const detection = detections[i];
    const [x, y, w, h] = view.imageBox(detection.box);
    const highlighted = chosen === i;
    const plain = lost.has(i) ? LOST_COLOUR : !matched ? "#00ff7f" : matched.has(i) ? MATCH_COLOURS.tp : MATCH_COLOURS.fp;
    context.strokeStyle = highlighted ? "#ff2d55" : plain;
    context.lineWidth = highlighted ? 3 : lost.has(i) ? 2.5 : 1.5;
    context.setLineDash(lost.has(i) ? [6, 4] : []);
    context.strokeRect(x, y, w, h);
    context.setLineDash([]);
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

// a key of the boxes' colours: a chip drawn like the box it names (its colour; line "solid" or "dashed"), then text
export function boxKey(colour, line, text) {
  const span = element("span", text);
  span.className = "key";
  span.style.setProperty("--key", colour); // CSSOM, allowed by the page's CSP
  span.style.setProperty("--key-line", line);
  return span;
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
export function showAnswer(report, side, model, compare) {
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
    markLost();
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
  markLost();
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
  paragraph.replaceChildren(`Ground truth: ${plural} (IoU ≥ 0.5): `,
    boxKey(MATCH_COLOURS.tp, "solid", `${found} found`), ", ",
    boxKey(MATCH_COLOURS.missed, "dashed", `${truth.length - found} missed`), ", ",
    boxKey(MATCH_COLOURS.fp, "solid", `${falsePositives} false positive${falsePositives === 1 ? "" : "s"}`), ".");
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

// the detections lost without the block of the knockout shown (state.knockedOut) struck out in its side's list, and
// a key saying so; the other lists unmarked
export function markLost() {
  const shown = state.knockedOut;
  SIDES.forEach((name, s) => {
    const root = $(`#answer-${name.toLowerCase()}`);
    const change = shown && shown.side === s ? shown.entry.change : null;
    const marks = Boolean(change && Array.isArray(change.lost));
    const lost = new Set(marks ? change.lost : []);
    for (const button of root.querySelectorAll(".detection")) {
      const item = button.closest("li");
      const gone = lost.has(Number(button.dataset.index));
      item.classList.toggle("lost", gone);
      const said = $(".lost-note", item);
      if (gone && !said) item.append(Object.assign(element("span", " (lost without its preference)"),
        { className: "lost-note visually-hidden" }));
      if (!gone && said) said.remove();
    }
    const key = $(".knockout-key", root);
    key.hidden = !marks;
    root.dataset.lost = [...lost].join(",");
    if (!marks) return;
    key.replaceChildren(lost.size ? boxKey(LOST_COLOUR, "dashed", `struck out: lost without ${shown.block}'s preference`)
      : `none lost without ${shown.block}'s preference`, lost.size ? ` (${lost.size} of ` +
      `${(state.reports[s].detections || []).length}; dashed on its card)` : "");
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

export function toggleAllDetections() {
  state.allDetections = !state.allDetections;
  state.reports.forEach((report, side) => showAnswer(report, side, side ? state.compare : state.model,
    state.reports.length > 1));
}
