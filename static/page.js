// attnlens page, the entry (the one module the page loads): upload an image, draw every block's maps, click a
// pixel to see where it looks. Everything is computed in the browser from the /api/v1/analyze answers
// (include=values,maps), so clicks, hovers, colormap and opacity changes never go back to the server. With "Compare
// with", one image is analysed by two models and the cards of the same block are shown side by side, on one colour
// range, with their difference; clicks act on both sides. Here: the controls and the ways in of an image wired to
// the analysis (and the downloads: JSON, the paper figure), then the Dataset view started.
import { analyze, reanalyze } from "./analysis.js";
import { initDatasets } from "./dataset.js";
import { toggleAllDetections } from "./detections.js";
import { $, saveBlob, setStatus } from "./dom.js";
import { downloadFigure } from "./figure.js";
import { describeModels, loadModels, modelNamed, offerModels } from "./models.js";
import { redraw, state } from "./state.js";

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
  $("#download-figure").addEventListener("click", downloadFigure);
  let resizeTimer;
  window.addEventListener("resize", () => { clearTimeout(resizeTimer); resizeTimer = setTimeout(redraw, 150); });
  document.body.dataset.ready = "true";
}

// module scripts run once the document is parsed
init().catch((error) => setStatus(`The page could not start: ${error.message}`, "error"));
initDatasets().catch((error) => setStatus(`The dataset could not be listed: ${error.message}`, "error"));
