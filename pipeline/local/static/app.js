// The local stack's page: what an app built on the pipeline does. It asks its backend for a
// presigned POST, posts the file straight to the uploads bucket, shows the original through the
// CDN at once, polls the manifest through the CDN, paints its placeholder colour and then each
// variation from its versioned URL.
"use strict";

const TILE = 150;  // the largest side of a variation's tile, in CSS pixels
const cards = new Map();  // path -> {element, upload, manifestKey, uploadedAt, shownAt}
let stack = null;

const $ = (selector, root = document) => root.querySelector(selector);

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "text") node.textContent = value;
    else node.setAttribute(name, value);
  }
  node.append(...children);
  return node;
}

function bytes(n) {
  if (n == null) return "";
  return n >= 1048576 ? `${(n / 1048576).toFixed(1)} MB` : n >= 1024 ? `${(n / 1024).toFixed(1)} kB` : `${n} B`;
}

function showError(message) {
  const error = $("#error");
  error.textContent = message || "";
  error.hidden = !message;
}

async function json(response) {
  const text = await response.text();
  try { return JSON.parse(text); } catch { return {error: text || response.statusText}; }
}

async function uploadFile(file) {
  const signed = await fetch("/api/uploads", {
    method: "POST", headers: {"content-type": "application/json"},
    body: JSON.stringify({name: file.name, content_type: file.type}),
  });
  if (!signed.ok) throw new Error(`${file.name}: ${(await json(signed)).error}`);
  const upload = await signed.json();
  const form = new FormData();
  for (const [name, value] of Object.entries(upload.fields)) form.append(name, value);
  form.append("file", file);  // last: S3 ignores the fields after the file
  const uploadedAt = performance.now();
  const posted = await fetch(upload.url, {method: "POST", body: form});
  if (posted.status !== 204) throw new Error(`${file.name}: the uploads bucket answered ${posted.status}`);
  const card = cardFor({path: upload.path, ...upload});
  card.uploadedAt = uploadedAt;
  card.shownAt = null;
  await refreshUploads();
}

async function deleteUpload(path) {
  const response = await fetch(`/api/uploads?path=${encodeURIComponent(path)}`, {method: "DELETE"});
  if (!response.ok) showError(`${path}: ${(await json(response)).error}`);
  await refreshUploads();
}

function cardFor(upload) {
  let card = cards.get(upload.path);
  if (!card) {
    const remove = element("button", {type: "button", text: "Delete"});
    remove.addEventListener("click", () => deleteUpload(upload.path));
    const node = element("article", {class: "card", "data-path": upload.path, "data-status": "waiting"},
      element("header", {},
        element("h2", {text: upload.path}),
        element("span", {class: "status", text: "waiting for the manifest"}),
        element("span", {class: "timing"}),
        remove),
      element("div", {class: "row originals"}),
      element("div", {class: "row variations"}),
      element("p", {class: "reason", hidden: ""}));
    card = {element: node, upload, manifestKey: null, uploadedAt: null, shownAt: null, originalUrl: null};
    cards.set(upload.path, card);
    $("#uploads").prepend(node);
    $("#empty").hidden = true;
  }
  if (upload.version_id !== card.upload.version_id || upload.deleted !== card.upload.deleted) {
    card.polledAt = 0;  // a new version, or a deletion: look at the manifest again at once
  }
  card.upload = {...card.upload, ...upload};
  showOriginal(card);
  return card;
}

function showOriginal(card) {
  const {upload} = card;
  const row = $(".originals", card.element);
  if (upload.deleted) { row.replaceChildren(); card.originalUrl = null; return; }
  if (!upload.version_id || card.originalUrl === upload.original_url) return;
  card.originalUrl = upload.original_url;
  const image = element("img", {alt: `original of ${upload.path}`, src: upload.original_url});
  image.addEventListener("load", () => image.classList.add("loaded"));
  row.replaceChildren(element("figure", {class: "original"}, element("div", {class: "frame"}, image),
    element("figcaption", {}, element("b", {text: "original"}), ` · ${bytes(upload.bytes)}`)));
}

function setStatus(card, status, text) {
  card.element.dataset.status = status;
  $(".status", card.element).textContent = text;
}

function showManifest(card, manifest) {
  const {upload} = card;
  const current = manifest && !upload.deleted && manifest.source.version_id === upload.version_id;
  const key = manifest ? `${manifest.write_id}/${upload.version_id}/${upload.deleted}` : null;
  if (key === card.manifestKey) return;
  card.manifestKey = key;
  const row = $(".variations", card.element);
  const reason = $(".reason", card.element);
  reason.hidden = true;
  if (upload.deleted) {
    row.replaceChildren();
    setStatus(card, manifest && manifest.status === "deleted" ? "deleted" : "waiting",
      manifest && manifest.status === "deleted" ? "deleted: the manifest is a tombstone" : "deleting…");
    return;
  }
  if (!current || !["ready", "failed"].includes(manifest.status)) {
    setStatus(card, "waiting", "waiting for the manifest");
    return;
  }
  if (card.uploadedAt !== null && card.shownAt === null) {
    card.shownAt = performance.now();
    $(".timing", card.element).textContent =
      `manifest ${((card.shownAt - card.uploadedAt) / 1000).toFixed(2)} s after the upload`;
  }
  if (manifest.status === "failed") {
    row.replaceChildren();
    setStatus(card, "failed", "failed");
    reason.textContent = manifest.reason;
    reason.hidden = false;
    return;
  }
  setStatus(card, "ready", `ready: ${manifest.source.format} ${manifest.source.width}×${manifest.source.height}`);
  const colour = (manifest.placeholder || {}).dominant_color || "#dde3ea";
  row.replaceChildren(...Object.entries(manifest.variations).map(([name, entry]) => {
    const scale = Math.min(TILE / entry.width, TILE / entry.height, 1);
    const frame = element("div", {class: "frame"});
    // Through CSSOM, which the page's Content-Security-Policy allows (a style attribute it does not).
    frame.style.width = `${Math.max(8, Math.round(entry.width * scale))}px`;
    frame.style.height = `${Math.max(8, Math.round(entry.height * scale))}px`;
    frame.style.background = colour;  // the placeholder, painted while the variation loads
    const image = element("img", {alt: `${name} of ${upload.path}`, src: stack.cdn + entry.url});
    image.addEventListener("load", () => image.classList.add("loaded"));
    frame.append(image);
    return element("figure", {class: "variation", "data-variation": name}, frame,
      element("figcaption", {}, element("b", {text: name}),
        ` · ${entry.width}×${entry.height} · ${bytes(entry.bytes)}`));
  }));
}

async function pollManifests() {
  await Promise.all([...cards.values()].map(async (card) => {
    const status = card.element.dataset.status, now = performance.now();
    if (status === "deleted" && card.upload.deleted) return;
    // A settled upload is looked at again every few seconds: another client may replace it.
    if ((status === "ready" || status === "failed") && now - (card.polledAt || 0) < 5000) return;
    card.polledAt = now;
    let manifest = null;
    try {
      // The CDN keeps a manifest a minute in a browser's cache: an app polling it asks past the cache.
      const response = await fetch(card.upload.manifest_url, {cache: "no-store"});
      if (response.ok) manifest = await response.json();  // 404 (not there yet) leaves it null
    } catch { return; }
    showManifest(card, manifest);
  }));
}

async function refreshUploads() {
  let listed;
  try {
    listed = await (await fetch("/api/uploads")).json();
  } catch { return; }
  for (const upload of listed.uploads.slice().reverse()) cardFor(upload);
}

async function refreshStatus() {
  let status;
  try {
    status = await (await fetch("/api/status")).json();
  } catch { return; }
  $("#runner").textContent = `${status.in_flight} in flight · ${status.attempts} invocations, ` +
    `${status.errors} raised · ${status.concurrency} at a time · retries after ` +
    `${status.retry_delays.map((s) => `${s} s`).join(" and ")}`;
  const list = $("#dead-letters");
  if (!status.dead_letters.length) {
    list.replaceChildren(element("li", {class: "none", text: "none"}));
  } else {
    list.replaceChildren(...status.dead_letters.map((letter) => element("li", {
      text: `${letter.function}: ${letter.keys.join(", ") || "(no key)"} after ${letter.attempts} attempts: ${letter.error}`,
    })));
  }
}

function showStack() {
  const rows = [["page", stack.page], ["CDN", stack.cdn], ["S3 and SNS", stack.s3], ["functions", stack.functions],
    ...Object.entries(stack.buckets).map(([role, name]) => [`${role} bucket`, name])];
  $("#stack").replaceChildren(...rows.flatMap(([name, value]) => [element("dt", {text: name}), element("dd", {text: value})]));
  $("#environment").textContent = Object.entries(stack.environment)
    .map(([name, value]) => `export ${name}='${value.replaceAll("'", "'\\''")}'`)
    .concat(["unset AWS_PROFILE AWS_SESSION_TOKEN CDN_DISTRIBUTION_ID"]).join("\n");
}

async function main() {
  stack = await (await fetch("/api/stack")).json();
  showStack();
  $("#file").addEventListener("change", async (event) => {
    showError("");
    const files = [...event.target.files];
    event.target.value = "";
    const results = await Promise.allSettled(files.map(uploadFile));
    const failures = results.filter((r) => r.status === "rejected").map((r) => r.reason.message);
    showError(failures.join("\n"));
  });
  await refreshUploads();
  await Promise.all([pollManifests(), refreshStatus()]);
  setInterval(refreshUploads, 2000);
  setInterval(pollManifests, 500);
  setInterval(refreshStatus, 2000);
}

main();
