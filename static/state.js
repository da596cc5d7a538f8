// attnlens page: the shared state (one object every module reads and writes) and the page's constants; redraw,
// which draws every card of the page again from that state.

export const MARGIN = 44; // room for the CA height / width profiles, in canvas pixels
export const MAX_VIEW = 520; // largest drawn image side, in CSS pixels
export const SIDES = ["A", "B"];
export const LISTED = 10; // detections listed before "show all"
export const FEW = 5; // detections drawn on the cards when none is selected
// a served dataset's boxes, in colours apart from the heatmaps' colormaps: true positive, false positive, missed
export const MATCH_COLOURS = { tp: "#00e5ff", fp: "#ff3df2", missed: "#ffffff" };
// a dataset's labelled boxes before any model is asked (the Dataset view's thumbnails): none of the three above
export const LABELLED_COLOUR = "#ffc400";
// the detections lost without a block's preference (its knockout shown): dashed on its card, struck out in the list
export const LOST_COLOUR = "#ff9f0a";

export const state = {
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
  shown: null, // the upload whose answers are shown (state.upload may be a newer one, still being analysed)
  knockouts: [], // per side: the promise of its include=knockout list for the image shown, asked once, or null
  knockedOut: null, // { side, block, entry } of the card whose knockout the lists mark (the last shown or hovered)
  ticket: 0, // the latest analysis; older answers are dropped
  image: null, // HTMLImageElement of the upload (upright, like the server's decoding)
  cards: [],
  boxes: "auto", // detections drawn on the cards: auto (the selected one, else the best few), all, none
  highlighted: null, // { side, index } of the clicked detection
  hovered: null, // { side, index } of the detection under the pointer in a list
  allDetections: false, // the lists show every detection (else the first LISTED)
};

export function redraw() { for (const card of state.cards) card.draw(); }
