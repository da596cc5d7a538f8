// attnlens page: colour ranges of maps, colour ramps (the diverging one of differences) and a map drawn through a
// colormap's lookup table (the tables themselves come from /api/v1/colormaps, in state.luts).

// cells the server sends as null were not finite (NaN / inf): left out of ranges, drawn in MASKED grey
const MASKED = [128, 128, 128];

export function rangeOf(grid) {
  let low = Infinity, high = -Infinity;
  for (const row of grid) for (const v of row) { if (v === null) continue; if (v < low) low = v; if (v > high) high = v; }
  return low <= high ? [low, high] : [0, 0];
}

export function union([a0, a1], [b0, b1]) { return [Math.min(a0, b0), Math.max(a1, b1)]; }

// 256 colours through evenly spaced [r, g, b] stops
function ramp(stops) {
  return Array.from({ length: 256 }, (_, i) => {
    const t = (i / 255) * (stops.length - 1);
    const k = Math.min(Math.floor(t), stops.length - 2);
    return stops[k].map((v, c) => Math.round(v + (t - k) * (stops[k + 1][c] - v)));
  });
}

// blue (below zero) - white - red (above), for differences
export const DIVERGING = ramp([[5, 48, 97], [67, 147, 195], [247, 247, 247], [214, 96, 77], [103, 0, 31]]);

export function colourGrid(grid, range, lut) {
  // values (h rows of w) -> an offscreen canvas, one pixel per cell, coloured by the lookup table
  const h = grid.length, w = grid[0].length;
  const canvas = document.createElement("canvas");
  canvas.width = w; canvas.height = h;
  const context = canvas.getContext("2d");
  const pixels = context.createImageData(w, h);
  const [low, high] = range || rangeOf(grid);
  const span = high > low ? high - low : 1;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const value = grid[y][x];
      const level = high > low ? Math.round(((value - low) / span) * 255) : 0;
      const [r, g, b] = value === null ? MASKED : lut[Math.max(0, Math.min(255, level))];
      const o = 4 * (y * w + x);
      pixels.data[o] = r; pixels.data[o + 1] = g; pixels.data[o + 2] = b; pixels.data[o + 3] = 255;
    }
  }
  context.putImageData(pixels, 0, 0);
  return canvas;
}
