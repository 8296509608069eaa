// SVG plots for docs/: lines or grouped bars over categories, linear or logarithmic y. Plain SVG text, no library:
// the figures are a few dozen points and must render on GitHub and in any browser without scripts.
import type { PlotSpec } from './model.ts';

const W = 640;
const H = 360;
const PAD = 56;
const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b', '#17becf', '#7f7f7f'];

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/** Round numbers for ticks: 1, 2, 5 × 10^k steps, about five of them. */
function linearTicks(max: number): { top: number; ticks: number[] } {
  const raw = max / 5;
  const mag = 10 ** Math.floor(Math.log10(raw || 1));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const top = Math.max(step, Math.ceil(max / step) * step);
  const ticks: number[] = [];
  for (let v = 0; v <= top + step / 2; v += step) ticks.push(Number(v.toPrecision(6)));
  return { top, ticks };
}

function tickLabel(v: number): string {
  if (v >= 1e6) return `${v / 1e6}M`;
  if (v >= 1e4) return `${v / 1e3}k`;
  return String(v);
}

export function drawPlot(p: PlotSpec): string {
  const finite = p.series.flatMap((s) => s.values.filter((v) => Number.isFinite(v) && (!p.log || v > 0)));
  const maxV = finite.length ? Math.max(...finite) : 1;
  const minV = finite.length ? Math.min(...finite) : 1;
  let y: (v: number) => number;
  let ticks: number[];
  if (p.log) {
    const lo = 10 ** Math.floor(Math.log10(minV));
    const hi = 10 ** Math.ceil(Math.log10(maxV) + 1e-9);
    const span = Math.max(1e-9, Math.log10(hi) - Math.log10(lo));
    y = (v) => H - PAD - ((Math.log10(Math.max(v, lo)) - Math.log10(lo)) / span) * (H - 2 * PAD);
    ticks = [];
    for (let v = lo; v <= hi * 1.0001; v *= 10) ticks.push(Number(v.toPrecision(6)));
  } else {
    const t = linearTicks(maxV);
    y = (v) => H - PAD - (Math.max(0, v) / t.top) * (H - 2 * PAD);
    ticks = t.ticks;
  }
  const n = p.x.length;
  const slot = (W - 2 * PAD) / Math.max(1, n);
  // lines: points at the slots' centres; bars: one group per slot
  const cx = (i: number) => PAD + slot * (i + 0.5);
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2}" y="18" text-anchor="middle" font-size="14">${esc(p.title)}</text>`,
    `<line x1="${PAD}" y1="${H - PAD}" x2="${W - PAD}" y2="${H - PAD}" stroke="black"/>`,
    `<line x1="${PAD}" y1="${PAD}" x2="${PAD}" y2="${H - PAD}" stroke="black"/>`,
    `<text x="${W / 2}" y="${H - 12}" text-anchor="middle">${esc(p.xLabel)}</text>`,
    `<text x="14" y="${H / 2}" transform="rotate(-90 14 ${H / 2})" text-anchor="middle">${esc(p.yLabel)}${p.log ? ' (log scale)' : ''}</text>`,
  ];
  for (const v of ticks) {
    parts.push(`<line x1="${PAD}" y1="${y(v)}" x2="${W - PAD}" y2="${y(v)}" stroke="#ddd"/>`);
    parts.push(`<text x="${PAD - 6}" y="${y(v) + 4}" text-anchor="end">${tickLabel(v)}</text>`);
  }
  p.x.forEach((label, i) => {
    parts.push(`<text x="${cx(i)}" y="${H - PAD + 16}" text-anchor="middle">${esc(label)}</text>`);
  });
  const k = p.series.length;
  p.series.forEach((s, j) => {
    const c = COLORS[j % COLORS.length];
    if (p.kind === 'line') {
      const pts = s.values
        .map((v, i) => (Number.isFinite(v) && (!p.log || v > 0) ? `${cx(i)},${y(v)}` : ''))
        .filter(Boolean);
      parts.push(`<polyline fill="none" stroke="${c}" stroke-width="2" points="${pts.join(' ')}"/>`);
      for (const pt of pts) {
        const [px, py] = pt.split(',');
        parts.push(`<circle cx="${px}" cy="${py}" r="3" fill="${c}"/>`);
      }
    } else {
      const bw = (slot * 0.8) / k;
      s.values.forEach((v, i) => {
        if (!Number.isFinite(v) || (p.log && v <= 0)) return;
        const x0 = cx(i) - (slot * 0.8) / 2 + j * bw;
        const top = y(v);
        parts.push(
          `<rect x="${x0}" y="${top}" width="${bw}" height="${H - PAD - top}" fill="${c}"><title>${esc(s.name)}: ${v}</title></rect>`,
        );
      });
    }
    parts.push(
      `<rect x="${W - PAD - 150}" y="${PAD - 10 + 16 * j - 9}" width="10" height="10" fill="${c}"/>`,
    );
    parts.push(`<text x="${W - PAD - 136}" y="${PAD - 10 + 16 * j}" fill="${c}">${esc(s.name)}</text>`);
  });
  parts.push('</svg>', '');
  return parts.join('\n');
}
