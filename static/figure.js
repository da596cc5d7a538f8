// attnlens page: "Download figure": the paper figure (the grid `attnlens figure` draws) of the image shown, drawn by
// the server (POST /api/v1/figure) with the models whose answers are shown as its columns (A and B when comparing,
// else the one model), the page's reference method as a column when one is chosen, at the format and width picked
// beside the button; saved under the server's file name.
import { requestFigure } from "./api.js";
import { $, saveBlob, setStatus } from "./dom.js";
import { state } from "./state.js";

let drawing = false; // one figure at a time; a click meanwhile is ignored

export async function downloadFigure() {
  const shown = state.shown; // the image whose answers are shown: the upload, or a served dataset's file
  if (drawing || !shown) return;
  const models = state.reports.map((report) => report.model);
  const options = { format: $("#figure-format").value, width: $("#figure-width").value, reference: state.reference };
  const ticket = state.ticket; // a newer analysis says what it does in the status line: the figure leaves it be
  const button = $("#download-figure");
  drawing = true;
  button.setAttribute("aria-disabled", "true");
  setStatus(`${shown.name}: drawing the figure…`, "busy");
  try {
    const figure = await requestFigure(shown.blob, shown.name, models, options);
    saveBlob(figure.blob, figure.name);
    const saved = `${shown.name}: the figure of ${models.join(" and ")} saved as ${figure.name}.`;
    if (ticket === state.ticket) setStatus(saved, "done");
  } catch (error) {
    if (ticket !== state.ticket) return;
    setStatus(error.cause === "server" ? error.message : `Could not reach the server: ${error.message}.`, "error");
  } finally {
    drawing = false;
    button.removeAttribute("aria-disabled");
  }
}
