// attnlens page: map cells <-> canvas pixels. View places the image (and a map over it) on a card's canvas; a cell
// of one grid translated to another grid; ACmix's reflect padding of window positions.
import { colourGrid } from "./colours.js";
import { state } from "./state.js";

export class View {
  // The image drawn at (left, top) with size (width, height); input pixels -> canvas pixels. The image
  // lies in the model input at report.input.content = [x0, y0, x1, y1] (letterbox: inside grey padding).
  constructor(report, left, top, width, height) {
    this.left = left; this.top = top; this.width = width; this.height = height;
    const [x0, y0, x1, y1] = report.input.content;
    this.ox = x0; this.oy = y0;
    this.sx = width / (x1 - x0);
    this.sy = height / (y1 - y0);
    this.imageScale = [width / report.image.width, height / report.image.height];
  }
  // centre of cell (row, col) of a map with the given stride, in canvas pixels
  cellCentre(row, col, stride) {
    return [this.left + ((col + 0.5) * stride - this.ox) * this.sx, this.top + ((row + 0.5) * stride - this.oy) * this.sy];
  }
  // a box [x0, y0, x1, y1] in original-image pixels -> canvas [x, y, w, h]
  imageBox([x0, y0, x1, y1]) {
    const [kx, ky] = this.imageScale;
    return [this.left + x0 * kx, this.top + y0 * ky, (x1 - x0) * kx, (y1 - y0) * ky];
  }
  cellAt(x, y, stride, rows, cols) {
    const col = Math.floor(((x - this.left) / this.sx + this.ox) / stride);
    const row = Math.floor(((y - this.top) / this.sy + this.oy) / stride);
    if (row < 0 || col < 0 || row >= rows || col >= cols) return null;
    return [row, col];
  }
  // a map whose cells are [cellH, cellW] input pixels, from the input's top-left corner
  drawMap(context, grid, [cellH, cellW], range, lut) {
    const rows = grid.length, cols = grid[0].length;
    context.save();
    context.beginPath();
    context.rect(this.left, this.top, this.width, this.height);
    context.clip();
    context.globalAlpha = state.opacity;
    context.imageSmoothingEnabled = true;
    context.drawImage(colourGrid(grid, range, lut), this.left - this.ox * this.sx, this.top - this.oy * this.sy,
      cols * cellW * this.sx, rows * cellH * this.sy);
    context.restore();
  }
}

// an index past either end of 0 .. size - 1 reflected back into it (as reflect padding reads it)
export function reflect(index, size) {
  if (size === 1) return 0;
  const period = 2 * (size - 1);
  let i = ((index % period) + period) % period;
  return i >= size ? period - i : i;
}

// a query cell of one grid -> the cell of another grid at the same input position
export function translateCell([row, col], from, to) {
  if (from.rows === to.rows && from.cols === to.cols) return [row, col];
  const at = (index, count) => Math.max(0, Math.min(count - 1, Math.floor(((index + 0.5) * from.stride) / to.stride)));
  return [at(row, to.rows), at(col, to.cols)];
}
