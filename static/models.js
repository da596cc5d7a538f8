// attnlens page: the models and reference methods the server offers: /api/v1/models loaded into the state, the
// Model / Compare with pickers, the model line under the title, and which reference methods need gradients.
import { $, element } from "./dom.js";
import { state } from "./state.js";

export function modelName(model) { return model ? model.name : ""; }

export function modelNamed(name) { return state.models.find((m) => modelName(m) === name) || null; }

// the page's reference methods (rendered from the server's list) and whether one explains a target by gradients
export function methodOption(method) { return [...$("#reference").options].find((option) => option.value === method); }
export function usesGradients(method) { return methodOption(method)?.dataset.gradients === "true"; }

// the models the server offers (none while it is still loading: asked again at the first analysis)
export async function loadModels() {
  const response = await fetch("/api/v1/models");
  if (!response.ok) return;
  const { default: preferred, models } = await response.json();
  state.models = models;
  state.model = models.find((m) => m.name === preferred) || models[0];
  offerModels();
}

export function offerModels() {
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

export function describeModels() {
  const detector = [state.model, state.compare].some((model) => model && model.task === "detect");
  $("#target-kind-pick").hidden = !detector || !usesGradients(state.reference);
  if (!state.model) return; // the server-rendered line stays (the model is loading)
  const api = element("a", "API");
  api.href = "/docs";
  const compared = state.compare ? [element("br"), ...modelSummary(state.compare, "Compared with ")] : [];
  $("#model-line").replaceChildren(...modelSummary(state.model, "Model "), ...compared, " · ", api);
}
