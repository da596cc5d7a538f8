// attnlens page: the analysis flow: an image analysed by the chosen model (and the one compared with), the answers
// shown (the panels, the timings, every card, or the compare view), the status line saying what came back.
import { request } from "./api.js";
import { cardsOf } from "./cards.js";
import { showCompared } from "./compare.js";
import { showAnswer } from "./detections.js";
import { $, loadImage, setStatus } from "./dom.js";
import { loadModels } from "./models.js";
import { SIDES, redraw, state } from "./state.js";

// labelled: { dataset, id } of a served dataset's image (its ground truth drawn on the cards), else null
export async function analyze(blob, name = "image", labelled = null) {
  const ticket = ++state.ticket;
  const upload = { blob, name, labelled };
  state.upload = upload;
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
    state.shown = upload;
    state.knockouts = []; // a knockout is of the answers shown: asked again for a new analysis
    state.knockedOut = null;
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

export function reanalyze() { if (state.upload) analyze(state.upload.blob, state.upload.name, state.upload.labelled); }

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
    showCompared(cards, decks, sides);
  } else {
    state.cards = decks[0];
    cards.replaceChildren(...state.cards.map((card) => card.element));
  }
  redraw();
}
