// Console text with ANSI SGR colours to DOM nodes. Text is always set with
// textContent, so nothing a container prints can become markup. Other escape
// sequences (cursor moves, titles) are dropped.

// CSI ... final byte, OSC ... BEL/ST, and lone two-byte escapes.
const ESCAPES = /\x1b\[([0-9;:?]*)([@-~])|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]/g;

/** Splits `text` into [{text, fg, bg, bold}] segments following SGR codes. */
export function parse(text, state = { fg: null, bg: null, bold: false }) {
  const segments = [];
  let last = 0;
  const push = (chunk) => {
    if (chunk) segments.push({ text: chunk, fg: state.fg, bg: state.bg, bold: state.bold });
  };
  for (const match of text.matchAll(ESCAPES)) {
    push(text.slice(last, match.index));
    last = match.index + match[0].length;
    if (match[2] !== "m") continue;
    const codes = match[1] === "" ? [0] : match[1].split(/[;:]/).map((c) => Number(c || 0));
    for (let i = 0; i < codes.length; i += 1) {
      const code = codes[i];
      if (code === 0) { state.fg = null; state.bg = null; state.bold = false; }
      else if (code === 1) state.bold = true;
      else if (code === 22) state.bold = false;
      else if (code >= 30 && code <= 37) state.fg = code - 30;
      else if (code >= 90 && code <= 97) state.fg = code - 90 + 8;
      else if (code === 39) state.fg = null;
      else if (code >= 40 && code <= 47) state.bg = code - 40;
      else if (code >= 100 && code <= 107) state.bg = code - 100 + 8;
      else if (code === 49) state.bg = null;
      else if ((code === 38 || code === 48) && codes[i + 1] === 5) i += 2; // 256 colours: skipped
      else if ((code === 38 || code === 48) && codes[i + 1] === 2) i += 4; // true colour: skipped
    }
  }
  push(text.slice(last));
  return segments;
}

/** A DocumentFragment of spans for `text`; `state` carries colours across calls. */
export function render(text, state) {
  const fragment = document.createDocumentFragment();
  for (const segment of parse(text.replace(/\r(?!\n)/g, ""), state)) {
    if (segment.fg === null && segment.bg === null && !segment.bold) {
      fragment.append(document.createTextNode(segment.text));
      continue;
    }
    const span = document.createElement("span");
    const classes = [];
    if (segment.fg !== null) classes.push(`fg-${segment.fg}`);
    if (segment.bg !== null) classes.push(`bg-${segment.bg}`);
    if (segment.bold) classes.push("bold");
    span.className = classes.join(" ");
    span.textContent = segment.text;
    fragment.append(span);
  }
  return fragment;
}
