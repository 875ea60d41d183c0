// Line charts and sparklines on <canvas> over a time window. Colours come from the
// page's CSS custom properties, so the charts follow the stylesheet.

function cssVar(name, fallback) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || fallback;
}

function fit(canvas) {
  const ratio = window.devicePixelRatio || 1;
  const width = Math.max(1, Math.round(canvas.clientWidth * ratio));
  const height = Math.max(1, Math.round(canvas.clientHeight * ratio));
  if (canvas.width !== width || canvas.height !== height) {
    canvas.width = width;
    canvas.height = height;
  }
  const context = canvas.getContext("2d");
  context.setTransform(ratio, 0, 0, ratio, 0, 0);
  context.clearRect(0, 0, canvas.clientWidth, canvas.clientHeight);
  return { context, width: canvas.clientWidth, height: canvas.clientHeight };
}

/**
 * Draws `lines` ([{points: [[t, v]], color}]) over the last `windowSeconds` ending now.
 * `max` fixes the top of the scale (else the data's maximum, at least `min`); `grid` adds guide lines
 * labelled with `label(value)`.
 */
export function draw(canvas, lines, { windowSeconds = 600, max, min = 0, grid = false, label } = {}) {
  if (!canvas.isConnected || canvas.clientWidth === 0) return;
  const { context, width, height } = fit(canvas);
  const now = Date.now() / 1000;
  const start = now - windowSeconds;
  let top = max ?? 0;
  if (max === undefined) {
    for (const line of lines) for (const [, v] of line.points) top = Math.max(top, v);
    top = top > 0 ? top * 1.2 : 1;
  }
  top = Math.max(top, min);
  const pad = grid ? { l: 4, r: 4, t: 6, b: 4 } : { l: 1, r: 1, t: 2, b: 2 };
  const x = (t) => pad.l + ((t - start) / windowSeconds) * (width - pad.l - pad.r);
  const y = (v) => height - pad.b - (Math.min(v, top) / top) * (height - pad.t - pad.b);
  if (grid) {
    context.strokeStyle = cssVar("--grid", "#e5e7eb");
    context.fillStyle = cssVar("--muted", "#6b7280");
    context.lineWidth = 1;
    context.font = "11px system-ui, sans-serif";
    for (const share of [0.5, 1]) {
      const gy = Math.round(y(top * share)) + 0.5;
      context.beginPath();
      context.moveTo(pad.l, gy);
      context.lineTo(width - pad.r, gy);
      context.stroke();
      if (label) context.fillText(label(top * share), pad.l + 2, gy + 12);
    }
  }
  for (const line of lines) {
    const points = line.points.filter(([t]) => t >= start - 2);
    if (points.length === 0) continue;
    const color = cssVar(line.color, "#2563eb");
    context.beginPath();
    points.forEach(([t, v], i) => (i === 0 ? context.moveTo(x(t), y(v)) : context.lineTo(x(t), y(v))));
    context.strokeStyle = color;
    context.lineWidth = grid ? 1.75 : 1.25;
    context.lineJoin = "round";
    context.stroke();
    if (line.fill) {
      context.lineTo(x(points[points.length - 1][0]), height - pad.b);
      context.lineTo(x(points[0][0]), height - pad.b);
      context.closePath();
      context.globalAlpha = 0.12;
      context.fillStyle = color;
      context.fill();
      context.globalAlpha = 1;
    }
  }
}
