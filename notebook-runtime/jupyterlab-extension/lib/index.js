// Atelier's auto-stop countdown for JupyterLab: the time left until the notebook stops by
// itself, at the top right, and a Renew button (the seed's "click the countdown to renew").
// It asks the gateway that serves this page, on the page's own origin, through the only
// gateway endpoints a notebook page may call: `/nb/{id}/.atelier/lease` and `…/renew` (the
// notebook's own host has no `/v1`).
import { Widget } from '@lumino/widgets';

/** `/prefix/nb/{id}/lab…` → the gateway's endpoints for this notebook, or null elsewhere. */
export function notebookApi(pathname) {
  const m = /^(.*?)\/nb\/([^/]+)\//.exec(pathname);
  return m ? `${m[1]}/nb/${m[2]}/.atelier` : null;
}

/** 3725 → "1:02:05"; 65 → "1:05". */
export function formatLeft(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${m}:${ss}`;
}

const plugin = {
  id: '@atelier/auto-stop:plugin',
  description: 'Shows when the notebook stops by itself and renews it.',
  autoStart: true,
  activate: app => {
    const api = notebookApi(window.location.pathname);
    if (!api) {
      return;
    }
    const node = document.createElement('div');
    node.className = 'atelier-autostop';
    node.style.cssText =
      'display:flex;align-items:center;gap:6px;margin:0 8px;font-size:var(--jp-ui-font-size1);';
    const label = document.createElement('span');
    label.className = 'atelier-autostop-left';
    const button = document.createElement('button');
    button.className = 'atelier-autostop-renew jp-Button jp-mod-styled jp-mod-accept';
    button.textContent = 'Renew';
    button.title = 'Push the auto-stop time back by the notebook\u2019s auto-stop duration';
    button.hidden = true;
    node.append(label, button);
    const widget = new Widget({ node });
    widget.id = 'atelier-autostop';
    app.shell.add(widget, 'top', { rank: 1000 });

    let stopAt = null;
    let enabled = false;
    const render = () => {
      if (!enabled) {
        label.textContent = 'Auto-stop: off';
        button.hidden = true;
        return;
      }
      if (stopAt === null) {
        label.textContent = 'Auto-stop: -';
        button.hidden = true;
        return;
      }
      const left = (stopAt - Date.now()) / 1000;
      label.textContent = `Stops in ${formatLeft(left)}`;
      label.title = `Auto-stop at ${new Date(stopAt).toLocaleString()}`;
      button.hidden = false;
    };
    const refresh = async () => {
      try {
        const r = await fetch(`${api}/lease`, { credentials: 'same-origin' });
        if (!r.ok) {
          return;
        }
        const nb = await r.json();
        enabled = Boolean(nb.auto_stop && nb.auto_stop.enabled);
        stopAt = nb.auto_stop && nb.auto_stop.stop_at ? Date.parse(nb.auto_stop.stop_at) : null;
        render();
      } catch (e) {
        console.warn('atelier auto-stop: cannot read the notebook', e);
      }
    };
    button.addEventListener('click', async () => {
      button.disabled = true;
      label.textContent = 'Renewing\u2026';
      try {
        const r = await fetch(`${api}/renew`, {
          method: 'POST',
          credentials: 'same-origin',
          headers: { 'X-Atelier-CSRF': '1' }
        });
        if (!r.ok) {
          const body = await r.json().catch(() => ({}));
          label.textContent = (body.error && body.error.message) || `Renew failed (${r.status})`;
          return;
        }
        const nb = await r.json();
        stopAt = nb.auto_stop && nb.auto_stop.stop_at ? Date.parse(nb.auto_stop.stop_at) : null;
        render();
      } finally {
        button.disabled = false;
      }
    });
    render();
    void refresh();
    window.setInterval(render, 1000);
    window.setInterval(() => void refresh(), 30000);
  }
};

export default plugin;
