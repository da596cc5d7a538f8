// attnlens page: the reference map's card (reference=METHOD) and the block it is made from.
import { Card } from "./card.js";
import { methodOption, modelName } from "./models.js";
import { SIDES } from "./state.js";

// the reference map (reference=METHOD): Grad-CAM, Grad-CAM++, LayerCAM or EigenCAM over the model input at the
// finest of its layers, drawn like a block's
export class ReferenceCard extends Card {
  knockable() { return false; } // a map of the whole model, no block of it
  title() {
    const { method, layers, target } = this.block.reference;
    const side = this.compare ? `${SIDES[this.side]} · ` : "";
    const where = layers.length === 1 ? `layer ${layers[0]}` : `${layers.length} layers ${layers.join(", ")}`;
    const kind = target && target.kind !== "class" ? ` (${target.kind === "box" ? "box" : "class + box"})` : "";
    const what = !target ? "no target" : "rank" in target ? `target ${target.label}, detection ${target.rank}${kind}`
      : `target ${target.label}, class ${target.index}`;
    return `${side}${methodOption(method)?.textContent || method} reference (${where}, ${what})`;
  }

  cellSize() {
    const [rows, cols] = this.block.heatmap.shape;
    return [this.report.input.height / rows, this.report.input.width / cols];
  }

  fileName() {
    const method = this.block.reference.method.replace("++", "pp");
    return this.compare ? `${modelName(this.model)}-${method}` : method;
  }
}

// the analysis' reference, as a block the cards can draw
export function referenceBlock(reference) {
  return { id: "reference", type: "reference", heatmap: reference.heatmap, maps: {}, reference };
}
