// Polls status.json and fills the page. Client names come from the network: text only, never HTML.
"use strict";

const POLL_MS = 1000;
const query = window.location.search; // carries ?token= when the bridge has one

function $(id) { return document.getElementById(id); }

function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function ago(seconds) {
  if (seconds < 60) return `${Math.round(seconds)} s`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

function clock(epoch) { return new Date(epoch * 1000).toLocaleTimeString(); }

function setText(id, text, cls) {
  const el = $(id);
  el.textContent = text;
  if (cls !== undefined) el.className = `badge ${cls}`;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const [text, cls] of cells) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    tr.appendChild(td);
  }
  return tr;
}

function fill(tbody, rows, columns, empty) {
  tbody.replaceChildren(...rows);
  if (!rows.length) tbody.appendChild(row([[empty, "empty"]])).firstChild.colSpan = columns;
}

function orRecipe(value) { return value === null ? "recipe" : String(value); }

// a setting as it ran: the value, marked when the model's recipe chose it; what was asked before the job started
function setting(asked, used) {
  if (used === null || used === undefined) return orRecipe(asked);
  return asked === null ? `${used} (recipe)` : String(used);
}

function size(j) { return `${j.width}×${j.height}${j.masked ? " masked" : ""}${j.live ? " live" : ""}`; }

function progressCell(j) {
  const td = document.createElement("td");
  td.className = "progress";
  if (!j.running) { td.textContent = "waiting"; return td; }
  if (j.progress === null) { td.textContent = "starting"; return td; }
  const [index, step, steps] = j.progress;
  td.textContent = `step ${step} of ${steps}${j.count > 1 ? `, image ${index + 1} of ${j.count}` : ""}`;
  const bar = document.createElement("progress");
  bar.max = steps * j.count;
  bar.value = index * steps + step;
  td.appendChild(bar);
  return td;
}

function render(s) {
  const m = s.model;
  setText("model-name", m.name || "none");
  setText("model-status", m.status, m.status);
  setText("model-message", m.message || "");
  const progress = $("model-progress");
  progress.hidden = m.status !== "loading" || m.progress === null;
  if (!progress.hidden) progress.value = m.progress;
  setText("model-bytes", m.download_size ? `downloaded ${bytes(m.downloaded)} of ${bytes(m.download_size)}` : "");

  setText("device", s.device);
  setText("rss", bytes(s.memory.rss));
  const mem = s.memory;
  setText("vram", mem.vram_total ? `${bytes(mem.vram_allocated)} allocated, ${bytes(mem.vram_reserved)} reserved of ${bytes(mem.vram_total)}` : "not on a GPU");
  setText("queue", s.queue ? `${s.queue} waiting` : "empty");
  setText("live-fps", s.live_fps === null ? "no live clients" : `${s.live_fps} frames/s`);

  const active = s.active.map((j) => {
    const tr = row([[j.job_id, "job-id"], [j.client], [size(j)]]);
    tr.appendChild(progressCell(j));
    const used = j.used || [null, null, null];
    const texts = [setting(j.asked_steps, used[0]), setting(j.strength, used[2]), setting(j.guidance, used[1]), `${(j.ms / 1000).toFixed(1)} s`];
    for (const text of texts) tr.appendChild(row([[text]]).firstChild);
    return tr;
  });
  fill($("active"), active, 8, "nothing running");

  const now = s.time;
  fill($("clients"), s.clients.map((c) => row([
    [String(c.connection)], [c.name], [c.peer], [`${ago(now - c.since)} ago`], [String(c.jobs)],
    [c.fps === null ? "" : `${c.fps} frames/s`],
  ])), 6, "no clients connected");

  fill($("jobs"), s.jobs.map((j) => row([
    [clock(j.ended)], [j.job_id, "job-id"], [j.client], [size(j)],
    [`${j.steps} run, schedule ${setting(j.asked_steps, j.used && j.used[0])}`],
    [setting(j.strength, j.used && j.used[2])], [setting(j.guidance, j.used && j.used[1])], [String(j.count)],
    [`${Math.round(j.ms)} ms`], [j.outcome, j.outcome],
  ])), 10, "no jobs yet");

  const thumbs = s.thumbnails.map((t) => {
    const figure = document.createElement("figure");
    const img = document.createElement("img");
    img.src = t.src;
    img.alt = `result of job ${t.job_id}`;
    const caption = document.createElement("figcaption");
    caption.textContent = t.job_id;
    figure.append(img, caption);
    return figure;
  });
  $("thumbnails").replaceChildren(...thumbs);
  if (!thumbs.length) $("thumbnails").textContent = "no results yet";
}

async function poll() {
  try {
    const response = await fetch(`status.json${query}`, { cache: "no-store" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    render(await response.json());
    setText("connection", "live", "ready");
  } catch (error) {
    setText("connection", `bridge unreachable (${error.message})`, "error");
  }
  setTimeout(poll, POLL_MS);
}

poll();
