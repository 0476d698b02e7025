// The page: uploads, the look (styles, weights, sliders), previews, renders with progress, the camera loop.
// Every result comes from the server's library calls; nothing is computed here.
"use strict";
const $ = (id) => document.getElementById(id);
const state = { styles: [], photos: [], selected: null, video: null, session: Math.random().toString(36).slice(2) };

// ---- messages and requests ---------------------------------------------------------------------------------
function say(text, kind = "error") {
  const box = $("message");
  box.textContent = text;
  box.className = kind;
  box.hidden = false;
  clearTimeout(say.timer);
  say.timer = setTimeout(() => { box.hidden = true; }, 8000);
}

async function api(path, options = {}) {
  const response = await fetch(path, options);
  if (!response.ok) {
    let text = `${response.status} ${response.statusText}`;
    try { text = (await response.json()).error || text; } catch (e) { /* not JSON */ }
    throw new Error(text);
  }
  return response;
}

const postJSON = (path, body) => api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });

async function upload(file, kind) {
  const response = await api(`/api/upload?kind=${kind}&name=${encodeURIComponent(file.name)}`, { method: "POST", body: file });
  const item = await response.json();
  item.url = URL.createObjectURL(file);
  return item;
}

async function uploadAll(files, kind) {
  const done = [];
  for (const file of files) {
    try { done.push(await upload(file, kind)); } catch (e) { say(e.message); }
  }
  return done;
}

// a folder's other files (notes, sidecars) are left out; a file that claims to be an image is checked by the server
const images = (files) => files.filter((f) => f.type.startsWith("image/"));

async function entryFiles(entry) {  // a dropped folder: every file in it, sub-folders included
  if (entry.isFile) return [await new Promise((ok, fail) => entry.file(ok, fail))];
  const reader = entry.createReader(), files = [];
  for (;;) {
    const batch = await new Promise((ok, fail) => reader.readEntries(ok, fail));
    if (!batch.length) return files;
    for (const child of batch) files.push(...images(await entryFiles(child)));
  }
}

async function droppedFiles(transfer) {
  const entries = [...transfer.items].map((item) => item.webkitGetAsEntry && item.webkitGetAsEntry()).filter(Boolean);
  if (!entries.length) return [...transfer.files];
  const files = [];
  for (const entry of entries) files.push(...await entryFiles(entry));
  return files;
}

function dropZone(zone, input, handle) {
  input.addEventListener("change", () => { handle([...input.files]); input.value = ""; });
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", async (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    handle(await droppedFiles(e.dataTransfer));
  });
}

// ---- the look ----------------------------------------------------------------------------------------------
function look() {
  return {
    styles: state.styles.map((s) => [s.id, s.weight]),
    strength: Number($("strength").value),
    palette: Number($("palette").value),
    preserve_color: $("preserve").checked,
  };
}

function showStyles() {
  const list = $("styles");
  list.replaceChildren(...state.styles.map((s, i) => {
    const li = document.createElement("li");
    li.innerHTML = `<img alt=""><div><div class="name"></div><input type="range" min="0" max="1" step="0.05" aria-label="weight"></div><button title="Remove">✕</button>`;
    li.querySelector("img").src = s.url;
    li.querySelector(".name").textContent = `${s.name} · ${s.weight.toFixed(2)}`;
    const weight = li.querySelector("input");
    weight.value = s.weight;
    weight.addEventListener("input", () => {
      s.weight = Number(weight.value);
      li.querySelector(".name").textContent = `${s.name} · ${s.weight.toFixed(2)}`;
      lookChanged();
    });
    li.querySelector("button").addEventListener("click", () => { state.styles.splice(i, 1); showStyles(); lookChanged(); });
    return li;
  }));
  const to = $("video-to");
  const chosen = to.value;
  to.replaceChildren(to.options[0], ...state.styles.map((s) => new Option(s.name, s.id)));
  to.value = state.styles.some((s) => s.id === chosen) ? chosen : "";
  updateButtons();
}

function lookChanged() {
  for (const id of ["strength", "palette"]) document.querySelector(`output[for=${id}]`).textContent = Number($(id).value).toFixed(2);
  schedulePreview();
}

function updateButtons() {
  $("render").disabled = !(state.styles.length && state.photos.length);
  $("video-render").disabled = !(state.styles.length && state.video);
}

// ---- photos and the preview --------------------------------------------------------------------------------
function showPhotos() {
  $("photos").replaceChildren(...state.photos.map((p) => {
    const li = document.createElement("li");
    li.title = `${p.name} (${p.width}×${p.height})`;
    li.classList.toggle("selected", p === state.selected);
    const img = document.createElement("img");
    img.src = p.url;
    img.alt = p.name;
    li.append(img);
    li.addEventListener("click", () => { state.selected = p; showPhotos(); schedulePreview(); });
    return li;
  }));
  $("compare").hidden = !state.selected;
  if (state.selected) $("original").src = state.selected.url;
  updateButtons();
}

const preview = { busy: false, again: false };
function schedulePreview() {  // the newest settings win: one request at a time, the last change sent when it returns
  if (!state.selected || !state.styles.length) return;
  if (preview.busy) { preview.again = true; return; }
  preview.busy = true;
  preview.again = false;
  const sent = look();
  postJSON("/api/preview", { photo: state.selected.id, look: sent, size: 512 })
    .then(async (response) => {
      const img = $("preview");
      URL.revokeObjectURL(img.src);
      img.src = URL.createObjectURL(await response.blob());
      img.dataset.count = Number(img.dataset.count) + 1;
      img.dataset.look = JSON.stringify(sent);
      $("preview-info").textContent = `Preview ${response.headers.get("X-Size")} in ${response.headers.get("X-Elapsed-Ms")} ms`;
      showCache(JSON.parse(response.headers.get("X-Cache")));
    })
    .catch((e) => say(e.message))
    .finally(() => { preview.busy = false; if (preview.again) schedulePreview(); });
}

async function refreshCache() {
  try { showCache((await (await api("/api/state")).json()).cache); } catch (e) { /* the next try will tell */ }
}

function showCache(cache) {
  $("cache").textContent = `Style codes cached: ${cache.codes} (${(cache.bytes / 1024).toFixed(0)} kB)`;
}

// ---- renders -----------------------------------------------------------------------------------------------
async function follow(job, bar, link, status) {  // poll a job until it ends; progress, then the download link
  bar.hidden = false;
  link.hidden = true;
  for (;;) {
    bar.max = Math.max(job.total, 1);
    bar.value = job.done;
    status.textContent = `${job.state}: ${job.done} of ${job.total} (${job.seconds} s)`;
    if (job.state === "done" || job.state === "failed") break;
    await new Promise((r) => setTimeout(r, 300));
    job = await (await api(`/api/jobs/${job.id}`)).json();
  }
  bar.hidden = true;
  if (job.state === "failed") { say(job.message); status.textContent = `Failed: ${job.message}`; return false; }
  link.href = job.download;
  link.download = job.filename;
  link.textContent = `Download ${job.filename}`;
  link.hidden = false;
  status.textContent = `Done in ${job.seconds} s` + (job.failures.length ? `; not stylized: ${job.failures.join("; ")}` : "");
  if (job.failures.length) say(`Some photos failed: ${job.failures.join("; ")}`);
  return true;
}

async function renderPhotos() {
  $("render").disabled = true;
  try {
    const job = await (await postJSON("/api/render", { photos: state.photos.map((p) => p.id), look: look(), format: $("format").value })).json();
    await follow(job, $("render-progress"), $("render-download"), $("render-status"));
  } catch (e) { say(e.message); } finally { updateButtons(); }
}

async function renderVideo() {
  $("video-render").disabled = true;
  try {
    const job = await (await postJSON("/api/video", { video: state.video.id, look: look(), to: $("video-to").value || null })).json();
    if (await follow(job, $("video-progress"), $("video-download"), $("video-status"))) {
      $("video-result").src = $("video-download").href;
      $("video-result").hidden = false;
    }
  } catch (e) { say(e.message); } finally { updateButtons(); }
}

// ---- camera ------------------------------------------------------------------------------------------------
const camera = { stream: null, running: false, side: 320, frames: 0, times: [] };

async function startCamera() {
  if (!state.styles.length) { say("Add a style image first."); return; }
  try {
    camera.stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
  } catch (e) { say(`The camera is not available: ${e.message}`); return; }
  const video = $("camera-video");
  video.srcObject = camera.stream;
  await video.play();
  camera.running = true;
  $("camera-start").disabled = true;
  $("camera-stop").disabled = false;
  cameraLoop();
}

function stopCamera() {
  camera.running = false;
  if (camera.stream) camera.stream.getTracks().forEach((t) => t.stop());
  camera.stream = null;
  $("camera-start").disabled = false;
  $("camera-stop").disabled = true;
}

async function cameraLoop() {  // one frame in flight; the size adapts so a frame takes about 1/10 s
  const video = $("camera-video"), out = $("camera-out"), grab = document.createElement("canvas");
  while (camera.running) {
    if (!state.styles.length || !video.videoWidth) { await new Promise((r) => setTimeout(r, 200)); continue; }
    const scale = Math.min(1, camera.side / Math.max(video.videoWidth, video.videoHeight));
    grab.width = Math.round(video.videoWidth * scale);
    grab.height = Math.round(video.videoHeight * scale);
    grab.getContext("2d").drawImage(video, 0, 0, grab.width, grab.height);
    const blob = await new Promise((r) => grab.toBlob(r, "image/jpeg", 0.85));
    const t0 = performance.now();
    try {
      const query = `look=${encodeURIComponent(JSON.stringify(look()))}&session=${state.session}`;
      const response = await api(`/api/frame?${query}`, { method: "POST", body: blob });
      const frame = await createImageBitmap(await response.blob());
      out.width = frame.width;
      out.height = frame.height;
      out.getContext("2d").drawImage(frame, 0, 0);
    } catch (e) { say(e.message); await new Promise((r) => setTimeout(r, 1000)); continue; }
    const took = performance.now() - t0, now = performance.now();
    camera.frames += 1;
    camera.times = camera.times.filter((t) => now - t < 2000).concat([now]);
    if (took > 130) camera.side = Math.max(96, Math.round(camera.side * 0.85));
    else if (took < 70) camera.side = Math.min(640, Math.round(camera.side * 1.1));
    const fps = camera.times.length > 1 ? (camera.times.length - 1) / ((now - camera.times[0]) / 1000) : 0;
    const stats = $("camera-stats");
    stats.dataset.frames = camera.frames;
    stats.dataset.fps = fps.toFixed(1);
    stats.textContent = `${fps.toFixed(1)} frames/s at ${grab.width}×${grab.height} (${Math.round(took)} ms a frame)`;
  }
}

// ---- tabs and start-up -------------------------------------------------------------------------------------
function showTab(name) {
  for (const tab of ["photos", "camera", "video"]) {
    $(`tab-${tab}`).setAttribute("aria-selected", String(tab === name));
    $(`panel-${tab}`).hidden = tab !== name;
  }
  if (name !== "camera") stopCamera();
}

async function start() {
  for (const tab of ["photos", "camera", "video"]) $(`tab-${tab}`).addEventListener("click", () => showTab(tab));
  dropZone($("style-drop"), $("style-input"), async (files) => {
    for (const s of await uploadAll(files, "style")) if (!state.styles.some((x) => x.id === s.id)) state.styles.push({ ...s, weight: 1 });
    showStyles();
    lookChanged();
  });
  const addPhotos = async (files) => {
    for (const p of await uploadAll(files, "photo")) if (!state.photos.some((x) => x.id === p.id)) state.photos.push(p);
    state.selected = state.selected || state.photos[0] || null;
    showPhotos();
    schedulePreview();
  };
  dropZone($("photo-drop"), $("photo-input"), addPhotos);
  $("folder-input").addEventListener("change", () => { addPhotos(images([...$("folder-input").files])); $("folder-input").value = ""; });
  dropZone($("video-drop"), $("video-input"), async (files) => {
    const [clip] = await uploadAll(files.slice(0, 1), "video");
    if (!clip) return;
    state.video = clip;
    $("video-info").textContent = `${clip.name}: ${clip.width}×${clip.height}, ${clip.frames} frames, ${clip.seconds} s` + (clip.audio ? ", with sound (kept)" : "");
    $("video-download").hidden = $("video-result").hidden = true;
    updateButtons();
  });
  for (const id of ["strength", "palette"]) $(id).addEventListener("input", lookChanged);
  $("preserve").addEventListener("change", lookChanged);
  $("render").addEventListener("click", renderPhotos);
  $("video-render").addEventListener("click", renderVideo);
  $("camera-start").addEventListener("click", startCamera);
  $("camera-stop").addEventListener("click", stopCamera);
  const info = await (await api("/api/state")).json();
  $("runtime").textContent = `${info.runtime} · model ${info.model} · uploads up to ${info.max_upload_mb} MB`;
  $("palette").value = info.palette;
  showCache(info.cache);
  lookChanged();
  setInterval(refreshCache, 5000);
  document.body.dataset.ready = "1";
}

start().catch((e) => say(e.message));
