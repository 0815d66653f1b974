// Sightline review workstation: heatmap opacity and toggle, zoom/pan, keyboard shortcuts.
// No inline script (the Content-Security-Policy forbids it); everything hangs off element ids.
"use strict";

function typing(event) {
  const t = event.target;
  return t instanceof HTMLElement && (t.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(t.tagName));
}

function setupViewer() {
  const overlay = document.getElementById("overlay");
  const slider = document.getElementById("opacity");
  const out = document.getElementById("opacity-value");
  const toggle = document.getElementById("toggle");
  if (overlay && slider) {
    const apply = () => {
      overlay.style.opacity = String(Number(slider.value) / 100);
      if (out) out.textContent = slider.value + "%";
    };
    slider.addEventListener("input", apply);
    apply();
  }
  if (overlay && toggle) {
    toggle.addEventListener("change", () => overlay.classList.toggle("hidden", !toggle.checked));
  }
  const stack = document.getElementById("stack");
  if (!stack) return;
  let scale = 1, x = 0, y = 0, drag = null;
  const layers = stack.querySelectorAll("img");
  const draw = () => layers.forEach((img) => { img.style.transform = `translate(${x}px, ${y}px) scale(${scale})`; });
  const zoom = (factor) => { scale = Math.min(8, Math.max(1, scale * factor)); if (scale === 1) { x = 0; y = 0; } draw(); };
  const bind = (id, fn) => { const el = document.getElementById(id); if (el) el.addEventListener("click", fn); };
  bind("zoom-in", () => zoom(1.25));
  bind("zoom-out", () => zoom(0.8));
  bind("zoom-reset", () => { scale = 1; x = 0; y = 0; draw(); });
  stack.addEventListener("wheel", (e) => { e.preventDefault(); zoom(e.deltaY < 0 ? 1.1 : 0.9); }, { passive: false });
  stack.addEventListener("pointerdown", (e) => { drag = { px: e.clientX - x, py: e.clientY - y }; stack.setPointerCapture(e.pointerId); });
  stack.addEventListener("pointermove", (e) => { if (drag && scale > 1) { x = e.clientX - drag.px; y = e.clientY - drag.py; draw(); } });
  stack.addEventListener("pointerup", () => { drag = null; });
  document.addEventListener("keydown", (e) => {
    if (typing(e) || e.ctrlKey || e.metaKey || e.altKey) return;
    if (e.key === "h" && toggle) { toggle.checked = !toggle.checked; toggle.dispatchEvent(new Event("change")); }
    else if (e.key === "+") zoom(1.25);
    else if (e.key === "-") zoom(0.8);
  });
}

function setupVerdictKeys() {
  const form = document.getElementById("verdict-form");
  document.addEventListener("keydown", (e) => {
    if (typing(e) || e.ctrlKey || e.metaKey || e.altKey) return;
    const next = document.getElementById("next");
    if (e.key === "n" && next) { window.location.assign(next.href); return; }
    if (e.key === "Escape") { const back = document.getElementById("back"); if (back) window.location.assign(back.href); return; }
    const verdict = { a: "agree", d: "disagree", u: "uncertain" }[e.key];
    if (form && verdict) {
      const radio = form.querySelector(`input[name="verdict"][value="${verdict}"]`);
      if (radio) { radio.checked = true; radio.focus(); }
    }
  });
}

function setupWorklistKeys() {
  const rows = Array.from(document.querySelectorAll("table.worklist tbody tr[data-study]"));
  if (!rows.length) return;
  let at = 0;
  const select = (i) => {
    rows[at].classList.remove("selected");
    at = Math.max(0, Math.min(rows.length - 1, i));
    rows[at].classList.add("selected");
    const link = rows[at].querySelector("a.open");
    if (link) link.focus();
  };
  document.addEventListener("keydown", (e) => {
    if (typing(e) || e.ctrlKey || e.metaKey || e.altKey) return;
    if (e.key === "j" || e.key === "n") select(at + 1);
    else if (e.key === "k" || e.key === "p") select(at - 1);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  setupViewer();
  setupVerdictKeys();
  setupWorklistKeys();
});
