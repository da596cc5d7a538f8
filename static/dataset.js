// attnlens page, the Dataset view (attnlens serve --data): a paged grid of a served dataset's images with their
// labelled boxes, filtered by class, file name and (a detector's results) missed objects, sorted by a map's score
// or the objects missed / found from the eval results (the sort keys grouped by model); a click opens the image in
// the full view (analyze?dataset=&image=, which answers its ground truth too).
import { analyze } from "./analysis.js";
import { explain } from "./api.js";
import { boxKey } from "./detections.js";
import { $, element, format, setStatus } from "./dom.js";
import { LABELLED_COLOUR } from "./state.js";

const PAGE = 48; // thumbnails per page
const browse = {
  datasets: [], // GET /api/v1/datasets
  dataset: null, // the one shown
  offset: 0,
  total: 0,
  ticket: 0, // the latest listing asked for; older answers are dropped
};

function datasetNamed(name) { return browse.datasets.find((d) => d.name === name) || null; }

function listingUrl() {
  const params = new URLSearchParams({ offset: String(browse.offset), limit: String(PAGE) });
  const sort = $("#dataset-sort").value;
  const chosen = $("#dataset-class").value;
  const search = $("#dataset-search").value.trim();
  if (sort) params.set("sort", sort);
  if (chosen !== "") params.set("class", chosen);
  if (search) params.set("search", search);
  if ($("#dataset-missed").checked) params.set("missed", "1");
  return `/api/v1/datasets/${encodeURIComponent(browse.dataset.name)}/images?${params}`;
}

// a sort key's [model, map, measure]: keys are MAP:MEASURE, or MODEL/MAP:MEASURE when the eval results hold several
// models (model ""); a map is a block's id, objects (missed / found), baseline/NAME or reference/METHOD, and a
// model's name may hold / and : itself, so the key is read from its end
function keyParts(key) {
  const colon = key.lastIndexOf(":");
  const path = key.slice(0, colon).split("/");
  const named = path.length > 1 && ["baseline", "reference"].includes(path[path.length - 2]);
  const map = path.splice(named ? -2 : -1).join("/");
  return [path.join("/"), map, key.slice(colon + 1)];
}

// the sort keys as options grouped by model (one model's: its objects, then its maps), each named by its map and
// measure only; in the server's order, which puts the objects keys first
function sortGroups(keys) {
  const groups = new Map();
  for (const key of keys) {
    const [model, map, measure] = keyParts(key);
    const group = model || (map === "objects" ? "objects" : "maps");
    const option = new Option(map === "objects" ? `${measure} objects` : `${map} · ${measure}`, key);
    option.title = key;
    groups.set(group, [...(groups.get(group) || []), option]);
  }
  return [...groups].map(([label, options]) => {
    const group = document.createElement("optgroup");
    group.label = label;
    group.append(...options);
    return group;
  });
}

// the labelled boxes over a thumbnail (boxes in original pixels, the thumbnail at its own scale)
function drawThumbnailBoxes(canvas, image, entry) {
  canvas.width = image.naturalWidth;
  canvas.height = image.naturalHeight;
  const context = canvas.getContext("2d");
  const scale = entry.width ? image.naturalWidth / entry.width : 1;
  context.strokeStyle = LABELLED_COLOUR;
  context.lineWidth = 2;
  const boxes = entry.boxes.map(({ box: [x0, y0, x1, y1] }) => [x0 * scale, y0 * scale, (x1 - x0) * scale, (y1 - y0) * scale]);
  for (const [x, y, w, h] of boxes) context.strokeRect(x, y, w, h);
  canvas.dataset.boxes = JSON.stringify(boxes.map((b) => b.map((v) => Math.round(v))));
}

function thumbnail(entry) {
  const name = browse.dataset.name;
  const button = document.createElement("button");
  button.type = "button";
  button.className = "thumb";
  button.dataset.id = entry.id;
  button.title = `${entry.id}: ${entry.boxes.length} labelled box${entry.boxes.length === 1 ? "" : "es"} (amber); open it`;
  const frame = element("span");
  frame.className = "thumb-frame";
  const image = new Image();
  image.alt = entry.file;
  image.decoding = "async";
  const canvas = document.createElement("canvas");
  image.addEventListener("load", () => drawThumbnailBoxes(canvas, image, entry));
  image.src = `/api/v1/datasets/${encodeURIComponent(name)}/thumbnails/${encodeURIComponent(entry.id)}`;
  frame.append(image, canvas);
  const sort = $("#dataset-sort").value;
  const score = sort && sort in entry.scores ? ` · ${format(entry.scores[sort])}` : "";
  button.append(frame, element("span", `${entry.file}${score}`));
  button.addEventListener("click", () => openImage(name, entry));
  return button;
}

async function showListing() {
  if (!browse.dataset) return;
  const ticket = ++browse.ticket;
  const response = await fetch(listingUrl());
  if (ticket !== browse.ticket) return;
  if (!response.ok) {
    setStatus(await explain(response), "error");
    return;
  }
  const listing = await response.json();
  browse.total = listing.total;
  $("#dataset-grid").replaceChildren(...listing.images.map(thumbnail));
  const last = Math.min(browse.offset + PAGE, listing.total);
  $("#dataset-count").textContent = listing.total ?
    `${browse.offset + 1}–${last} of ${listing.total} image${listing.total === 1 ? "" : "s"}` : "no image matches";
  $("#dataset-prev").disabled = browse.offset === 0;
  $("#dataset-next").disabled = last >= listing.total;
  $("#dataset-view").dataset.total = String(listing.total);
}

// the image in the full view: every card, with its labelled boxes and the detections matched to them
async function openImage(name, entry) {
  const response = await fetch(`/api/v1/datasets/${encodeURIComponent(name)}/images/${encodeURIComponent(entry.id)}`);
  if (!response.ok) {
    setStatus(await explain(response), "error");
    return;
  }
  await analyze(await response.blob(), entry.id, { dataset: name, id: entry.id });
  $("#results").scrollIntoView({ block: "start" });
}

function chooseDataset(name) {
  browse.dataset = datasetNamed(name);
  browse.offset = 0;
  const { classes, sort_keys: keys } = browse.dataset;
  $("#dataset-class").replaceChildren(new Option("all", ""), ...classes.map((label, i) => new Option(label, String(i))));
  $("#dataset-sort").replaceChildren(new Option("file name", ""), ...sortGroups(keys));
  $("#dataset-sort-pick").hidden = !keys.length;
  $("#dataset-missed-pick").hidden = !keys.some((key) => key.endsWith("objects:missed"));
  $("#dataset-missed").checked = false;
  showListing();
}

export async function initDatasets() {
  const response = await fetch("/api/v1/datasets");
  if (!response.ok) return;
  browse.datasets = (await response.json()).datasets;
  if (!browse.datasets.length) return;
  $("#dataset-view").hidden = false;
  $("#dataset-key").replaceChildren(boxKey(LABELLED_COLOUR, "solid", "labelled boxes"),
    " on the thumbnails, from the dataset's labels; open an image for the ones a model found or missed.");
  $("#dataset").replaceChildren(...browse.datasets.map((d) => new Option(`${d.name} (${d.images} images)`, d.name)));
  $("#dataset-pick").hidden = browse.datasets.length < 2;
  $("#dataset").addEventListener("change", (event) => chooseDataset(event.target.value));
  const again = () => { browse.offset = 0; showListing(); };
  $("#dataset-class").addEventListener("change", again);
  $("#dataset-sort").addEventListener("change", again);
  $("#dataset-missed").addEventListener("change", again);
  let typing;
  $("#dataset-search").addEventListener("input", () => { clearTimeout(typing); typing = setTimeout(again, 250); });
  $("#dataset-prev").addEventListener("click", () => { browse.offset = Math.max(0, browse.offset - PAGE); showListing(); });
  $("#dataset-next").addEventListener("click", () => { browse.offset += PAGE; showListing(); });
  chooseDataset(browse.datasets[0].name);
}
