//! The dashboard's static files: its style sheet (the host's accent colour put in when it
//! is served) and its one small script (the copy button). The page works without the
//! script; the Content-Security-Policy allows no inline script or style.

/// The style sheet; `__ACCENT__` is replaced by the host's accent colour.
pub const CSS: &str = r#":root {
  --accent: __ACCENT__;
  --link: var(--accent);
  --bg: #f6f7f9; --panel: #ffffff; --text: #111827; --muted: #5b6472; --border: #e3e6eb;
  --sidebar: #ffffff; --code-bg: #f1f3f6; --ok: #137a3a; --ok-bg: #e3f6ea; --bad: #b42318;
  --bad-bg: #fde8e6; --warn-bg: #fff6e0; --warn: #7a4d00; --shadow: 0 1px 2px rgba(16,24,40,.06), 0 1px 3px rgba(16,24,40,.08);
  --valid: #22a06b; --denied: #e5484d; --limited: #f5a524; --grid: #e8ebef;
  color-scheme: light;
}
@media (prefers-color-scheme: dark) {
  :root:not([data-theme=light]) {
    --bg: #0f1115; --panel: #171a21; --text: #e7eaf0; --muted: #9aa3b2; --border: #2a2f3a;
    --link: color-mix(in srgb, var(--accent) 55%, #ffffff);
    --sidebar: #12151b; --code-bg: #0c0e12; --ok: #4ade80; --ok-bg: #12301f; --bad: #ff8a80;
    --bad-bg: #3a1614; --warn-bg: #33270a; --warn: #f6c768; --shadow: none; --grid: #252a33;
    color-scheme: dark;
  }
}
:root[data-theme=dark] {
  --bg: #0f1115; --panel: #171a21; --text: #e7eaf0; --muted: #9aa3b2; --border: #2a2f3a;
  --link: color-mix(in srgb, var(--accent) 55%, #ffffff);
  --sidebar: #12151b; --code-bg: #0c0e12; --ok: #4ade80; --ok-bg: #12301f; --bad: #ff8a80;
  --bad-bg: #3a1614; --warn-bg: #33270a; --warn: #f6c768; --shadow: none; --grid: #252a33;
  color-scheme: dark;
}
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body { margin: 0; background: var(--bg); color: var(--text); font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
a { color: var(--link); }
:focus-visible { outline: 3px solid var(--accent); outline-offset: 2px; border-radius: 4px; }
.skip { position: absolute; left: -999px; top: 8px; background: var(--panel); padding: 8px 12px; z-index: 10; }
.skip:focus { left: 8px; }
.shell { display: grid; grid-template-columns: 232px 1fr; min-height: 100vh; }
.sidebar { background: var(--sidebar); border-right: 1px solid var(--border); padding: 20px 14px; display: flex; flex-direction: column; gap: 24px; }
.brand { display: flex; align-items: center; gap: 10px; font-weight: 650; font-size: 16px; padding: 0 8px; color: var(--text); text-decoration: none; }
.brand img { width: 28px; height: 28px; border-radius: 6px; }
.brand .mark { width: 28px; height: 28px; border-radius: 7px; background: var(--accent); color: #fff; display: grid; place-items: center; font-size: 14px; }
.nav ul { list-style: none; margin: 0; padding: 0; }
.nav a { display: flex; align-items: center; gap: 10px; padding: 8px 10px; border-radius: 8px; color: var(--muted); text-decoration: none; font-weight: 500; }
.nav a[aria-current=page] { background: color-mix(in srgb, var(--accent) 14%, transparent); color: var(--link); }
.nav svg { width: 18px; height: 18px; }
.sidebar .foot { margin-top: auto; font-size: 13px; color: var(--muted); padding: 0 8px; display: grid; gap: 8px; }
.linkish { background: none; border: 0; padding: 0; color: var(--link); font: inherit; cursor: pointer; text-decoration: underline; }
main { padding: 32px 40px 64px; max-width: 1080px; width: 100%; }
h1 { font-size: 26px; margin: 0 0 4px; letter-spacing: -.01em; }
.lede { color: var(--muted); margin: 0 0 28px; }
h2 { font-size: 17px; margin: 0 0 14px; }
.panel { background: var(--panel); border: 1px solid var(--border); border-radius: 12px; box-shadow: var(--shadow); padding: 22px; margin-bottom: 24px; }
.row { display: flex; flex-wrap: wrap; gap: 14px; align-items: flex-end; }
.create-grid { display: grid; grid-template-columns: 2fr 1fr 1fr 1fr; gap: 14px; align-items: end; }
.create-grid .submit { grid-column: 1 / -1; }
.field { display: grid; gap: 6px; flex: 1 1 180px; }
.field.wide { flex: 2 1 260px; }
label { font-weight: 550; font-size: 13.5px; }
.hint { color: var(--muted); font-size: 12.5px; font-weight: 400; }
input, select { font: inherit; color: var(--text); background: var(--panel); border: 1px solid var(--border); border-radius: 8px; padding: 0 11px; height: 42px; width: 100%; }
input:focus, select:focus { border-color: var(--accent); }
.btn { font: inherit; font-weight: 600; border-radius: 8px; padding: 9px 16px; min-height: 40px; border: 1px solid transparent; cursor: pointer; background: var(--accent); color: #fff; text-decoration: none; display: inline-flex; align-items: center; gap: 8px; white-space: nowrap; }
.btn.secondary { background: var(--panel); color: var(--text); border-color: var(--border); }
.btn.danger { background: var(--bad); color: #fff; }
.btn.small { padding: 5px 10px; min-height: 32px; font-size: 13.5px; }
.btn.ghost-danger { background: transparent; color: var(--bad); border-color: color-mix(in srgb, var(--bad) 40%, transparent); }
.reveal { border-color: color-mix(in srgb, var(--accent) 45%, var(--border)); }
.keybox { display: flex; gap: 10px; align-items: stretch; margin: 10px 0; flex-wrap: wrap; }
.keybox code { flex: 1 1 320px; font: 14px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; background: var(--code-bg); border: 1px solid var(--border); border-radius: 8px; padding: 10px 12px; word-break: break-all; user-select: all; }
.warning { background: var(--warn-bg); color: var(--warn); border-radius: 8px; padding: 10px 12px; font-size: 14px; }
.notice { border-radius: 10px; padding: 12px 14px; margin-bottom: 20px; }
.notice.error { background: var(--bad-bg); color: var(--bad); }
.notice.ok { background: var(--ok-bg); color: var(--ok); }
.table-wrap { overflow-x: auto; }
table { width: 100%; border-collapse: collapse; font-size: 14px; }
th { text-align: left; color: var(--muted); font-weight: 600; font-size: 12.5px; text-transform: uppercase; letter-spacing: .04em; padding: 8px 10px; border-bottom: 1px solid var(--border); }
td { padding: 12px 10px; border-bottom: 1px solid var(--border); vertical-align: middle; }
tr:last-child td { border-bottom: 0; }
td .start { display: block; color: var(--muted); font: 12.5px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
.time { font-variant-numeric: tabular-nums; white-space: nowrap; }
.badge { display: inline-flex; align-items: center; gap: 6px; font-size: 12.5px; font-weight: 600; padding: 3px 9px; border-radius: 999px; }
.badge::before { content: ""; width: 7px; height: 7px; border-radius: 50%; background: currentColor; }
.badge.active { color: var(--ok); background: var(--ok-bg); }
.badge.revoked, .badge.expired, .badge.disabled { color: var(--bad); background: var(--bad-bg); }
.actions { display: flex; gap: 8px; flex-wrap: wrap; }
.empty { color: var(--muted); text-align: center; padding: 28px 0; }
.meter { display: block; width: 100%; height: 10px; margin: 4px 0 16px; }
.meter .track { fill: var(--code-bg); }
.meter .fill { fill: var(--accent); }
.meter.full .fill { fill: var(--bad); }
.facts { display: grid; grid-template-columns: repeat(auto-fit, minmax(190px, 1fr)); gap: 16px; margin: 0; }
.facts div { background: var(--code-bg); border-radius: 10px; padding: 12px 14px; }
.facts dt { color: var(--muted); font-size: 12.5px; }
.facts dd { margin: 2px 0 0; font-weight: 600; }
.chart svg { width: 100%; height: auto; display: block; }
.chart .bar-valid { fill: var(--valid); }
.chart .bar-denied { fill: var(--denied); }
.chart .bar-limited { fill: var(--limited); }
.chart .grid { stroke: var(--grid); }
.chart .axis { fill: var(--muted); font-size: 10px; }
.chart .anomaly { fill: none; stroke: var(--bad); stroke-width: 2; stroke-dasharray: 3 2; }
.legend { display: flex; gap: 16px; flex-wrap: wrap; font-size: 13px; color: var(--muted); margin-top: 8px; }
.legend i { display: inline-block; width: 10px; height: 10px; border-radius: 3px; margin-right: 6px; vertical-align: -1px; }
.legend .v { background: var(--valid); } .legend .d { background: var(--denied); } .legend .l { background: var(--limited); } .legend .a { border: 2px dashed var(--bad); }
.confirm { max-width: 560px; }
.split { display: grid; grid-template-columns: 1fr 1fr; gap: 24px; }
.split .facts { grid-template-columns: 1fr 1fr; }
.meter { border-radius: 5px; overflow: hidden; }
.crumbs { font-size: 14px; margin-bottom: 12px; }
.sr-only { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; }
@media (max-width: 760px) {
  .shell { grid-template-columns: 1fr; }
  .sidebar { border-right: 0; border-bottom: 1px solid var(--border); flex-direction: row; align-items: center; padding: 12px 14px; gap: 12px; flex-wrap: wrap; }
  .nav ul { display: flex; }
  .sidebar .foot { margin: 0 0 0 auto; grid-auto-flow: column; }
  main { padding: 20px 14px 48px; }
  .split { grid-template-columns: 1fr; gap: 0; }
  .create-grid { grid-template-columns: 1fr; }
  .panel { padding: 16px; }
  thead { display: none; }
  table, tbody, tr, td { display: block; width: 100%; }
  tr { border-bottom: 1px solid var(--border); padding: 8px 0; }
  tr:last-child { border-bottom: 0; }
  td { border: 0; padding: 4px 0; display: flex; justify-content: space-between; gap: 12px; }
  td::before { content: attr(data-label); color: var(--muted); font-size: 12.5px; font-weight: 600; }
  td.name-cell { display: block; }
  td.name-cell::before { content: none; }
}
"#;

/// The script: the copy button (shown only when scripts run).
pub const JS: &str = r#""use strict";
document.querySelectorAll("[data-copy]").forEach(function (button) {
  var target = document.getElementById(button.getAttribute("data-copy"));
  if (!target || !navigator.clipboard) { return; }
  button.hidden = false;
  button.addEventListener("click", function () {
    navigator.clipboard.writeText(target.textContent.trim()).then(function () {
      var label = button.querySelector("span");
      var before = label.textContent;
      label.textContent = "Copied";
      setTimeout(function () { label.textContent = before; }, 1600);
    });
  });
});
"#;
