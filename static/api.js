// attnlens page: the API client: one analysis by one model (POST /api/v1/analyze with the page's options; include
// values,maps for the cards, or knockout for "without its preference"), the paper figure of the image shown (POST
// /api/v1/figure) and a failed answer explained in words.
import { modelName, usesGradients } from "./models.js";
import { state } from "./state.js";

const ERROR_MESSAGES = {
  400: "This file could not be read as an image",
  404: "The server does not offer this model",
  413: "This image is too large",
  415: "This is not an image type attnlens reads (JPEG, PNG, WebP, GIF, TIFF, BMP)",
  503: "The server is busy",
};

// leads: words for some statuses in place of ERROR_MESSAGES' (what a 400 means differs by endpoint)
export async function explain(response, leads = {}) {
  let detail = "";
  try { detail = (await response.json()).detail; } catch (error) { detail = response.statusText; }
  if (typeof detail !== "string") detail = JSON.stringify(detail);
  const retry = response.headers.get("Retry-After");
  const lead = leads[response.status] || ERROR_MESSAGES[response.status] || `The server answered ${response.status}`;
  return `${lead}: ${detail}${retry ? ` (try again in ${retry} s)` : ""}.`;
}

function analyzeUrl(model, include) {
  const params = new URLSearchParams({ include });
  const referenced = include !== "knockout"; // a knockout needs no reference map (its backward pass saved)
  if (state.reference && referenced) params.set("reference", state.reference);
  if (referenced && usesGradients(state.reference) && model && model.task === "detect" && state.targetKind !== "class") {
    params.set("target_kind", state.targetKind);
  }
  if (state.models.length > 1 && model) params.set("model", modelName(model));
  return `/api/v1/analyze?${params}`;
}

// one analysis by one model: of the upload, or of a served dataset's image by id (the answer adds ground_truth);
// include: what the answer adds (values,maps: the cards' maps; knockout: each block's map made flat in turn)
export async function request(model, blob, name, labelled, include = "values,maps") {
  const form = new FormData();
  let url = analyzeUrl(model, include);
  if (labelled) url += `&${new URLSearchParams({ dataset: labelled.dataset, image: labelled.id })}`;
  else form.append("file", blob, name);
  const response = await fetch(url, { method: "POST", body: form });
  if (!response.ok) throw new Error(await explain(response), { cause: "server" });
  return response.json();
}

// the figure's file name, from the server's Content-Disposition (attachment; filename="attnlens-figure.pdf")
function attachmentName(response, fallback) {
  const match = /filename="?([^";]+)"?/.exec(response.headers.get("Content-Disposition") || "");
  return match ? match[1] : fallback;
}

// the paper figure (attnlens figure) of one image by the models named (in column order): { blob, name } of the
// file the server drew; options: format (pdf, png, svg), width (page, column), reference (a method or "")
export async function requestFigure(blob, name, models, { format, width, reference }) {
  const params = new URLSearchParams({ format, width });
  for (const model of models) params.append("model", model);
  if (reference) params.set("reference", reference);
  const form = new FormData();
  form.append("files", blob, name);
  const response = await fetch(`/api/v1/figure?${params}`, { method: "POST", body: form });
  const leads = { 400: "The figure could not be drawn" };
  if (!response.ok) throw new Error(await explain(response, leads), { cause: "server" });
  return { blob: await response.blob(), name: attachmentName(response, `attnlens-figure.${format}`) };
}
