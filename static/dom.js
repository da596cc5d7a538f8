// attnlens page: small DOM helpers ($, element, setStatus, saveBlob, loadImage) and how a number is written.

export const $ = (selector, root = document) => root.querySelector(selector);

export function element(tag, text = "") {
  const node = document.createElement(tag);
  node.textContent = text;
  return node;
}

export function format(value) {
  if (value === null || value === undefined) return "n/a"; // not finite, or not reported (a fork's block without it)
  if (value === 0) return "0";
  const magnitude = Math.abs(value);
  return magnitude >= 1000 || magnitude < 0.001 ? value.toExponential(2) : value.toPrecision(3);
}

export function setStatus(text, kind = "") {
  const status = $("#status");
  status.textContent = text;
  status.className = `status ${kind}`;
}

export function saveBlob(blob, name) {
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = name;
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
}

export async function loadImage(blob) {
  const image = new Image();
  image.src = URL.createObjectURL(blob);
  await image.decode();
  return image;
}
