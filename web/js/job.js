// One job, live: a canvas where each tile appears as soon as it is verified
// (the job's event stream says where; its pixels come from the tile's
// preview), progress with ETA, a strip of frame thumbnails, downloads,
// cancel/retry/delete, the job's log; and the proof view of one tile.

import * as api from './api.js';
import { h, fill, duration, percent, stateBadge, short, when, throttle, toast, errorBox } from './ui.js';

const PARALLEL = 6; // tile previews fetched at once

/** Draws tile previews onto the canvas, a few at a time, latest frame only. */
class TileCanvas {
  constructor(canvas, job, signal) {
    this.canvas = canvas;
    this.ctx = canvas.getContext('2d');
    this.job = job;
    this.signal = signal;
    this.frame = null;
    this.tiles = new Map(); // tile index -> rect, drawn or queued for this frame
    this.queue = [];
    this.running = 0;
    this.generation = 0;
  }

  show(frame) {
    this.frame = frame;
    this.tiles.clear();
    this.queue = [];
    this.generation++;
    this.ctx.fillStyle = '#15171d';
    this.ctx.fillRect(0, 0, this.canvas.width, this.canvas.height);
    this.canvas.dataset.frame = frame;
    this.canvas.dataset.drawn = '0';
  }

  add(tile, rect) {
    if (this.tiles.has(tile)) return;
    this.tiles.set(tile, rect);
    this.queue.push({ tile, rect, generation: this.generation });
    this.pump();
  }

  /** The tile under canvas pixel (x, y), if one is drawn there. */
  at(x, y) {
    for (const [tile, r] of this.tiles) {
      if (x >= r.x && x < r.x + r.width && y >= r.y && y < r.y + r.height) return tile;
    }
    return null;
  }

  pump() {
    while (this.running < PARALLEL && this.queue.length) {
      const item = this.queue.shift();
      if (item.generation !== this.generation) continue;
      this.running++;
      api.bitmap(`/api/v1/jobs/${this.job}/tiles/${item.tile}/preview.png`, this.signal)
        .then(image => {
          if (item.generation !== this.generation) return;
          this.ctx.drawImage(image, item.rect.x, item.rect.y);
          image.close();
          this.canvas.dataset.drawn = String(Number(this.canvas.dataset.drawn) + 1);
        })
        .catch(e => { if (e.name !== 'AbortError') console.warn(`tile ${item.tile}: ${e.message}`); })
        .finally(() => { this.running--; this.pump(); });
    }
  }

  /** Draws a finished frame's PNG over everything. */
  async whole(path) {
    const generation = this.generation;
    const image = await api.bitmap(path, this.signal);
    if (generation !== this.generation) return;
    this.ctx.drawImage(image, 0, 0, this.canvas.width, this.canvas.height);
    image.close();
    this.canvas.dataset.whole = String(this.frame);
  }
}

export function jobView(id) {
  return async (main, signal) => {
    let job = await api.json(`/api/v1/jobs/${id}`, { signal });
    const s = job.settings;
    const title = h('h1', { id: 'job-name' });
    const state = h('span', { id: 'job-state' });
    const actions = h('div', { class: 'actions', id: 'job-actions' });
    const bar = h('progress', { id: 'progress', max: 1, value: 0, 'aria-label': 'job progress' });
    const progressText = h('span', { id: 'progress-text', class: 'muted' });
    const error = h('div', { id: 'job-error' });
    const canvas = h('canvas', { id: 'live', width: s.width, height: s.height, tabindex: 0,
      'aria-label': 'The frame as its tiles arrive; choose a tile to see its proof of render' });
    const frameLabel = h('span', { id: 'frame-label' });
    const followButton = h('button', { type: 'button', id: 'follow', class: 'small', hidden: true }, 'Follow live');
    const downloads = h('div', { id: 'frame-downloads', class: 'downloads' });
    const strip = h('ol', { id: 'frames', class: 'strip', 'aria-label': 'Frames' });
    const log = h('ol', { id: 'log', class: 'log' });
    fill(main,
      h('p', {}, h('a', { href: '#/jobs' }, '← Jobs')),
      h('div', { class: 'head' }, h('div', {}, title, h('p', { class: 'muted', id: 'job-meta' })), state),
      actions, error,
      h('div', { class: 'progress-row' }, bar, progressText),
      h('section', { class: 'viewer', 'aria-label': 'Render' },
        h('div', { class: 'viewer-head' }, frameLabel, followButton),
        h('div', { class: 'canvas-box' }, canvas),
        downloads),
      h('section', { 'aria-labelledby': 'frames-heading' }, h('h2', { id: 'frames-heading' }, 'Frames'), strip),
      h('details', { class: 'card' }, h('summary', {}, 'Log'), log));

    const buttons = {
      cancel: h('button', { type: 'button', id: 'cancel', onclick: () => act('cancel') }, 'Cancel'),
      retry: h('button', { type: 'button', id: 'retry', onclick: () => act('retry') }, 'Retry'),
      all: h('button', { type: 'button', id: 'download-all',
        onclick: () => api.download(`/api/v1/jobs/${id}/archive`).catch(e => toast(e.message, 'error')) }, 'Download all (ZIP)'),
      remove: h('button', { type: 'button', id: 'delete', class: 'danger', onclick: () => remove() }, 'Delete'),
    };
    fill(actions, buttons.cancel, buttons.retry, buttons.all, buttons.remove);
    const tiles = new TileCanvas(canvas, id, signal);
    let frames = new Map(); // frame number -> Frame (finished)
    let follow = true;
    let shown = null;

    const thumbs = new Map(s.frames.map(f => {
      const button = h('button', { type: 'button', class: 'thumb', dataset: { frame: f }, 'aria-label': `frame ${f}` },
        h('span', { class: 'thumb-img' }), h('span', { class: 'thumb-num' }, f));
      button.addEventListener('click', () => { follow = false; show(f); });
      const item = h('li', {}, button);
      strip.append(item);
      return [f, button];
    }));

    const renderHead = () => {
      title.textContent = job.name;
      fill(state, stateBadge(job.state));
      document.getElementById('job-meta').textContent =
        `Job ${job.id} · ${s.width}×${s.height} · ${s.spp} spp · ${s.frames.length} frame${s.frames.length === 1 ? '' : 's'}` +
        (job.submitted_by ? ` · by ${job.submitted_by}` : '') + ` · ${when(job.created_ms)}`;
      const p = job.progress;
      bar.value = p.fraction;
      progressText.textContent = `${percent(p.fraction)} · ${p.tiles_done} / ${p.tiles} tiles · ${p.frames_done} / ${p.frames} frames` +
        (job.state === 'running' || job.state === 'queued' ? ` · ETA ${duration(p.eta_s)}` : '');
      fill(error, job.error ? errorBox(job.error) : null);
      // The buttons stay the same elements (a keyboard user's focus
      // survives the many updates a running job gets); only their state changes.
      const running = job.state === 'running' || job.state === 'queued';
      buttons.cancel.hidden = !running;
      buttons.retry.hidden = !(job.state === 'failed' || job.state === 'cancelled');
      buttons.all.disabled = p.frames_done === 0;
      buttons.remove.hidden = running;
    };

    const act = async what => {
      try {
        await api.post(`/api/v1/jobs/${id}/${what}`);
        await reload();
      } catch (e) { toast(e.message, 'error'); }
    };

    const remove = async () => {
      if (!confirm(`Delete job ${id} (“${job.name}”), its frames and files? This cannot be undone.`)) return;
      try {
        await api.request(`/api/v1/jobs/${id}`, { method: 'DELETE' });
        toast(`Job ${id} deleted.`);
        location.hash = '#/jobs';
      } catch (e) { toast(e.message, 'error'); }
    };

    const renderDownloads = () => {
      const f = frames.get(shown);
      if (!f) {
        fill(downloads, h('span', { class: 'muted' }, `Frame ${shown} is not finished yet.`));
        return;
      }
      const link = (label, path, format) => h('button', { type: 'button', class: 'small', dataset: { format },
        onclick: () => api.download(path).catch(e => toast(e.message, 'error')) }, label);
      fill(downloads, h('span', {}, `Frame ${shown}: `),
        Object.entries(f.files).map(([format, file]) => link(`${fileLabel(format)} (${(file.bytes / 1e6).toFixed(2)} MB)`, file.url, format)),
        f.manifest ? link('Proof manifest', f.manifest.url, 'manifest') : null);
    };

    const show = async frame => {
      shown = frame;
      tiles.show(frame);
      frameLabel.textContent = `Frame ${frame}`;
      followButton.hidden = follow;
      for (const [f, b] of thumbs) b.setAttribute('aria-pressed', String(f === frame));
      renderDownloads();
      const { tiles: list } = await api.json(`/api/v1/jobs/${id}/tiles?frame=${frame}`, { signal });
      if (shown !== frame) return;
      for (const t of list) tiles.add(t.tile, t.rect);
    };

    const loadFrames = async () => {
      const list = await api.json(`/api/v1/jobs/${id}/frames`, { signal });
      frames = new Map(list.frames.map(f => [f.frame, f]));
      for (const f of list.frames) {
        const button = thumbs.get(f.frame);
        if (!button || button.classList.contains('done')) continue;
        button.classList.add('done');
        if (f.thumbnail) {
          api.imageUrl(f.thumbnail).then(url => {
            fill(button.querySelector('.thumb-img'), h('img', { src: url, alt: '' }));
          }).catch(() => {});
        }
      }
      renderDownloads();
    };

    // The log is read incrementally (`?after=`), keeping the newest lines.
    let logAfter = null;
    const loadLog = async () => {
      for (;;) {
        const query = logAfter === null ? '' : `?after=${logAfter}`;
        const page = await api.json(`/api/v1/jobs/${id}/log${query}`, { signal });
        if (!page.entries.length) return;
        log.append(...page.entries.map(e => h('li', { class: `log-${e.level}` },
          h('time', {}, new Date(e.time_ms).toLocaleTimeString()), ' ', e.message)));
        logAfter = page.entries[page.entries.length - 1].seq;
        while (log.childElementCount > 500) log.firstElementChild.remove();
      }
    };

    const reload = async () => {
      job = await api.json(`/api/v1/jobs/${id}`, { signal });
      renderHead();
    };

    followButton.addEventListener('click', () => { follow = true; followButton.hidden = true; });
    canvas.addEventListener('click', e => {
      // The canvas is drawn scaled and centred in its box (object-fit: contain).
      const r = canvas.getBoundingClientRect();
      const scale = Math.min(r.width / canvas.width, r.height / canvas.height);
      const left = r.left + (r.width - canvas.width * scale) / 2;
      const top = r.top + (r.height - canvas.height * scale) / 2;
      const x = Math.floor((e.clientX - left) / scale);
      const y = Math.floor((e.clientY - top) / scale);
      const tile = tiles.at(x, y);
      if (tile !== null) location.hash = `#/jobs/${id}/tiles/${tile}`;
    });
    canvas.addEventListener('keydown', e => {
      if (e.key !== 'Enter') return;
      const first = tiles.tiles.keys().next();
      if (!first.done) location.hash = `#/jobs/${id}/tiles/${first.value}`;
    });

    renderHead();
    await loadFrames();
    // Start on the first unfinished frame (or the last one).
    const open = s.frames.find(f => !frames.has(f)) ?? s.frames[s.frames.length - 1];
    await show(open);
    const picture = frames.has(open) && viewable(frames.get(open));
    if (picture) tiles.whole(picture.url).catch(() => {});
    loadLog().catch(() => {});

    const refreshHead = throttle(() => reload().catch(() => {}), 1000);
    const refreshLog = throttle(() => loadLog().catch(() => {}), 2000);
    api.follow(`/api/v1/jobs/${id}/events`, (name, event) => {
      if (name === 'tile') {
        // A progressive job goes over every frame once per pass: following
        // its tiles would flip between frames, so it stays on the one shown.
        if (follow && !s.progressive && event.frame !== shown && !frames.has(event.frame)) show(event.frame);
        if (event.frame === shown) tiles.add(event.tile, event.rect);
        job.progress.tiles_done = Math.min(job.progress.tiles, job.progress.tiles_done + 1);
        job.progress.fraction = job.progress.tiles ? job.progress.tiles_done / job.progress.tiles : 1;
        renderHead();
        refreshHead();
      } else if (name === 'preview') {
        // A progressive frame's whole image after a pass (denoised if the job is).
        if (event.frame === shown && !frames.has(shown)) {
          tiles.whole(`/api/v1/jobs/${id}/frames/${event.frame}.preview.png`)
            .then(() => { canvas.dataset.preview = String(event.samples); })
            .catch(() => {});
          frameLabel.textContent = `Frame ${event.frame} · ${event.samples} spp preview`;
        }
        const button = thumbs.get(event.frame);
        if (button && !button.classList.contains('done')) {
          api.freshImageUrl(`/api/v1/jobs/${id}/frames/${event.frame}.preview.png`, signal).then(url => {
            const old = button.querySelector('.thumb-img img');
            if (old) URL.revokeObjectURL(old.src);
            fill(button.querySelector('.thumb-img'), h('img', { src: url, alt: '' }));
          }).catch(() => {});
        }
      } else if (name === 'frame') {
        if (event.frame === shown) frameLabel.textContent = `Frame ${event.frame}`;
        loadFrames().catch(() => {});
        refreshHead();
        refreshLog();
      } else if (name === 'job' || name === 'reconnected' || name === 'lagged') {
        refreshHead();
        refreshLog();
        if (name !== 'job') { loadFrames().catch(() => {}); if (shown !== null) show(shown); }
      } else if (name === 'error') {
        toast(event.message, 'error');
      }
    }, signal);
  };
}

/** A frame file's button label: `PNG`, `EXR`, `Denoised PNG`, `Denoised EXR`. */
function fileLabel(format) {
  return format.startsWith('denoised.') ? `Denoised ${format.slice('denoised.'.length).toUpperCase()}` : format.toUpperCase();
}

/** The PNG to show for a whole frame: the denoised one when the job has it. */
function viewable(frame) {
  return frame.files['denoised.png'] || frame.files.png;
}

function row(label, ...value) {
  return [h('dt', {}, label), h('dd', {}, ...value)];
}

/** One tile's proof of render: who rendered it, what they signed, what was checked. */
export function tileView(id, index) {
  return async (main, signal) => {
    const t = await api.json(`/api/v1/jobs/${id}/tiles/${index}`, { signal });
    const p = t.proof;
    const img = h('img', { id: 'tile-preview', class: 'tile-preview', alt: `tile ${index} of frame ${t.frame}`, width: t.rect.width, height: t.rect.height });
    api.imageUrl(t.preview).then(url => { img.src = url; }).catch(() => {});
    const check = p && p.spot_check;
    const outcome = !p ? h('span', { class: 'muted' }, 'no proof recorded (stored before proofs existed)')
      : !check ? h('span', { class: 'muted' }, 'spot checks are off on this farm')
      : check.mismatch ? h('span', { class: 'badge bad' }, `failed at pixel ${check.mismatch[0]},${check.mismatch[1]}`)
      : h('span', { class: 'badge good', id: 'check-outcome' }, `passed: ${check.pixels} pixel${check.pixels === 1 ? '' : 's'} re-rendered, bit-identical`);
    fill(main,
      h('p', {}, h('a', { href: `#/jobs/${id}` }, `← Job ${id}`)),
      h('h1', {}, `Tile ${index}`, h('span', { class: 'muted' }, ` · frame ${t.frame}`)),
      h('div', { class: 'proof' },
        h('figure', {}, img, h('figcaption', { class: 'muted' }, `${t.rect.width}×${t.rect.height} at ${t.rect.x},${t.rect.y}`)),
        h('dl', { class: 'facts', id: 'proof' },
          row('Worker', t.worker_name || '', ' ', h('code', { title: t.worker }, short(t.worker))),
          row('Samples', `${t.samples.start} – ${t.samples.start + t.samples.count - 1}`),
          row('Render time', t.millis < 1000 ? `${t.millis} ms` : duration(t.millis / 1000)),
          row('Fuel', t.fuel.toLocaleString()),
          row('Pixels (blake3)', h('code', { class: 'hash' }, t.blake3)),
          p ? row('Commitment', h('code', { class: 'hash', id: 'commitment' }, p.commitment)) : null,
          p ? row('Signature', h('code', { class: 'hash' }, p.signature)) : null,
          p ? row('Worker key', h('code', { class: 'hash' }, p.public_key)) : null,
          p ? row('Signature check', p.signature_checked ? h('span', { class: 'badge good' }, 'valid (ed25519)') : h('span', { class: 'badge bad' }, 'not checked')) : null,
          row('Spot check', outcome),
          check ? row('Check epoch', String(check.epoch), h('small', { class: 'muted' }, ' (its secret is published at /api/v1/proof/epochs once the epoch ends)')) : null)),
      h('p', { class: 'hint' }, 'The frame’s signed manifest lists every tile’s proof; ',
        h('code', {}, 'tessera verify'), ' checks it offline.'));
  };
}
