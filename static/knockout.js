// attnlens page: "without its preference" (a knockout, an inference-time ablation): the image shown analysed again
// by a side's model with include=knockout, the server running the model once more per block with that block's map
// made flat. Asked once per side when a card's button is first used (one answer for every card of that side), kept
// until a new analysis; each card says what was made flat and what of the answer changed, draws the detections
// lost dashed, and the card last shown or hovered marks them in the list.
import { request } from "./api.js";
import { markLost } from "./detections.js";
import { $, element, setStatus } from "./dom.js";
import { modelName } from "./models.js";
import { SIDES, state } from "./state.js";

// a card's block id is a record id (name, or name#2 for a module's second call); a knockout entry's is the module's
export function moduleOf(id) { return id.replace(/#\d+$/, ""); }

const percent = (p) => `${(100 * p).toFixed(1)}%`;
const signed = (value, digits) => `${value < 0 ? "\u2212" : "+"}${Math.abs(value).toFixed(digits)}`;

// the knockout list of a side's model for the image shown: one request, its promise shared by every card
function knockoutsOf(side, model) {
  if (state.knockouts[side]) return state.knockouts[side];
  const shown = state.shown;
  const who = state.reports.length > 1 ? `${SIDES[side]} (${modelName(model)})` : modelName(model);
  setStatus(`Running ${who} again without each block's preference (one forward per block)…`, "busy");
  const asked = request(model, shown.blob, shown.name, shown.labelled, "knockout").then((report) => {
    const entries = report.knockout || [];
    if (state.shown === shown) {
      const ms = report.timings_ms && report.timings_ms.knockout;
      setStatus(`${shown.name}: ${who} run again with each of ${entries.length} block${entries.length === 1 ? "" : "s"}` +
        `' maps made flat${ms ? ` (${Math.round(ms)} ms)` : ""}.`, "done");
    }
    return entries;
  }, (error) => {
    if (state.knockouts[side] === asked) state.knockouts[side] = null; // a failure is asked again at the next click
    const message = error.cause === "server" ? error.message : `Could not reach the server: ${error.message}.`;
    if (state.shown === shown) setStatus(message, "error");
    throw new Error(message);
  });
  state.knockouts[side] = asked;
  return asked;
}

// what changed without the block's preference, in one sentence (null: nothing to compare)
function changeText(entry, task) {
  const change = entry.change;
  if (!change) return null;
  if ("top_kept" in change) {
    const moved = `${change.top.label} ${percent(change.probability)} \u2192 ${percent(change.probability_after)}` +
      ` (${signed(100 * change.probability_change, 1)} points)`;
    return change.top_kept ? `Top class kept: ${moved}.`
      : `Top class changed to ${change.new_top.label}; ${moved}.`;
  }
  const { lost, gained, kept } = change;
  const mean = change.mean_score_change === null || change.mean_score_change === undefined ? ""
    : `; mean score change of the kept ${signed(change.mean_score_change, 3)}`;
  const where = lost.length ? " (struck out in the list, dashed on this card)" : "";
  return `Detections: ${lost.length} lost${where}, ${gained.length} gained, ${kept.length} kept${mean}` +
    `${task === "detect" ? "" : ` (task ${task})`}.`;
}

function describe(card, entry) {
  const panel = $(".knockout", card.element);
  if (!entry) {
    panel.replaceChildren(element("p", `The server answered no knockout for ${moduleOf(card.block.id)}.`));
    return;
  }
  const lines = [];
  const line = (lead, text) => {
    const p = element("p");
    p.append(element("strong", lead), ` ${text}`);
    lines.push(p);
  };
  if (entry.skipped !== undefined && entry.skipped !== null) {
    if (entry.skipped === entry.replaced) { // SPD: "nothing: … (not knocked out)"
      line("Made flat:", entry.replaced);
    } else {
      line("Would make flat:", entry.replaced);
      line("Not knocked out:", entry.skipped);
    }
    card.element.dataset.knockout = "skipped";
  } else {
    line("Made flat:", entry.replaced);
    const text = changeText(entry, card.report.task);
    line("Without it:", text || `the model gives no predictions to compare (task ${card.report.task}).`);
    card.element.dataset.knockout = "shown";
  }
  if (card.block.id !== entry.block) lines.push(element("p", `(${entry.block} is flat at each of its calls.)`));
  panel.replaceChildren(...lines);
}

// the detections a card's knockout loses (indices into its side's list), when shown
export function lostOn(card) {
  const change = card.knockoutShown && card.knockoutEntry && card.knockoutEntry.change;
  return change && Array.isArray(change.lost) ? change.lost : [];
}

// the card whose knockout the lists mark: this one (null: the last other card still showing one, else none)
function activate(card) {
  const showing = (c) => c.knockoutShown && c.knockoutEntry;
  const chosen = card && showing(card) ? card : [...state.cards].reverse().find(showing) || null;
  const now = chosen ? { side: chosen.side, block: chosen.knockoutEntry.block, entry: chosen.knockoutEntry, card: chosen }
    : null;
  if ((state.knockedOut && state.knockedOut.card) === (now && now.card)) return;
  state.knockedOut = now;
  markLost();
}

function press(card, on) {
  card.knockoutShown = on;
  card.knockoutButton.setAttribute("aria-pressed", String(on));
  $(".knockout", card.element).hidden = !on;
}

// the card's button: show its block's knockout (asking the server the first time), or hide it
export async function toggleKnockout(card) {
  const panel = $(".knockout", card.element);
  if (card.knockoutShown) {
    press(card, false);
    delete card.element.dataset.knockout;
    activate(null);
    card.draw();
    return;
  }
  press(card, true);
  const shown = state.shown;
  if (!card.knockoutEntry) {
    panel.replaceChildren(element("p", "computing… (the model runs once more per block)"));
    card.element.dataset.knockout = "computing";
    let entries;
    try {
      entries = await knockoutsOf(card.side, card.model);
    } catch (error) {
      if (state.shown !== shown || !card.knockoutShown) return;
      panel.replaceChildren(element("p", error.message));
      card.element.dataset.knockout = "error";
      card.knockoutButton.setAttribute("aria-pressed", "false");
      card.knockoutShown = false; // the panel keeps the reason; the next click asks again
      return;
    }
    if (state.shown !== shown || !card.knockoutShown) return; // a new analysis, or hidden meanwhile
    card.knockoutEntry = entries.find((e) => e.block === moduleOf(card.block.id)) || null;
  }
  describe(card, card.knockoutEntry);
  activate(card);
  card.draw();
}

// a card hovered or focused while showing its knockout: the lists mark its lost detections
export function knockoutHovered(card) { if (card.knockoutShown && card.knockoutEntry) activate(card); }
