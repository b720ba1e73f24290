// Signing in, the jobs list and the workers page.

import * as api from './api.js';
import { h, fill, when, percent, stateBadge, short, bytes, throttle, errorBox } from './ui.js';

/** The sign-in form: checks the token against the API before keeping it. */
export function signIn(main, done) {
  const input = h('input', {
    id: 'token', name: 'token', type: 'password', autocomplete: 'current-password', required: true,
    placeholder: 'ta_…', spellcheck: 'false', 'aria-describedby': 'token-help',
  });
  const remember = h('input', { id: 'remember', type: 'checkbox' });
  const error = h('div', { id: 'signin-error' });
  const button = h('button', { type: 'submit', class: 'primary' }, 'Sign in');
  const form = h('form', { id: 'signin-form', class: 'card narrow', novalidate: true },
    h('h1', {}, 'Sign in'),
    h('label', { for: 'token' }, 'API token'),
    input,
    h('p', { id: 'token-help', class: 'hint' },
      'Ask the farm’s admin for a token with the read and submit scopes (',
      h('code', {}, 'tessera token create --kind api --scope read,submit'), ').'),
    h('label', { class: 'check' }, remember, ' Remember on this device'),
    error,
    button);
  form.addEventListener('submit', async e => {
    e.preventDefault();
    const value = input.value.trim();
    fill(error);
    if (!value) {
      error.append(errorBox('Paste an API token first.'));
      input.focus();
      return;
    }
    button.disabled = true;
    try {
      await api.check(value);
      api.setToken(value, remember.checked);
      done();
    } catch (err) {
      const message = err.status === 401 ? `That token is not accepted: ${err.message}`
        : err.status === 403 ? `That token cannot read the farm: ${err.message}` : err.message;
      error.append(errorBox(message));
      button.disabled = false;
      input.focus();
    }
  });
  fill(main, form);
  input.focus();
}

function progressCell(job) {
  const p = job.progress;
  return h('td', { class: 'progress-cell' },
    h('progress', { max: 1, value: p.fraction, 'aria-label': `job ${job.id} progress` }),
    h('span', { class: 'muted' }, ` ${percent(p.fraction)}`));
}

/** Every job, newest first, kept current from the farm's event stream. */
export function jobsView() {
  return async (main, signal) => {
    const body = h('tbody');
    const empty = h('p', { class: 'muted', hidden: true }, 'No jobs yet. ', h('a', { href: '#/submit' }, 'Submit a scene'), '.');
    const table = h('div', { class: 'table-wrap' }, h('table', { id: 'jobs', class: 'list' },
      h('thead', {}, h('tr', {},
        h('th', { scope: 'col' }, '#'), h('th', { scope: 'col' }, 'Name'), h('th', { scope: 'col' }, 'State'),
        h('th', { scope: 'col' }, 'Progress'), h('th', { scope: 'col', class: 'wide' }, 'Frames'),
        h('th', { scope: 'col', class: 'wide' }, 'Priority'), h('th', { scope: 'col', class: 'wide' }, 'Submitted by'),
        h('th', { scope: 'col', class: 'wide' }, 'Submitted'))),
      body));
    fill(main, h('div', { class: 'head' }, h('h1', {}, 'Jobs'), h('a', { class: 'button primary', href: '#/submit' }, 'New render')),
      table, empty);

    const load = async () => {
      const { jobs } = await api.json('/api/v1/jobs?limit=500', { signal });
      empty.hidden = jobs.length > 0;
      fill(body, jobs.map(job => h('tr', { dataset: { job: job.id } },
        h('td', {}, job.id),
        h('td', {}, h('a', { href: `#/jobs/${job.id}` }, job.name)),
        h('td', {}, stateBadge(job.state), job.error ? h('span', { class: 'muted', title: job.error }, ' ⚠') : null),
        progressCell(job),
        h('td', { class: 'wide' }, `${job.progress.frames_done} / ${job.progress.frames}`),
        h('td', { class: 'wide' }, job.settings.priority),
        h('td', { class: 'wide' }, job.submitted_by || '—'),
        h('td', { class: 'wide' }, h('time', { datetime: new Date(job.created_ms).toISOString() }, when(job.created_ms))))));
    };
    await load();
    const refresh = throttle(() => load().catch(() => {}), 1000);
    api.follow('/api/v1/events', name => { if (name !== 'worker') refresh(); }, signal);
  };
}

function trustBadge(level) {
  return h('span', { class: `badge trust-${level || 'new'}` }, level || 'new');
}

/** Every worker the farm has seen, online first. */
export function workersView() {
  return async (main, signal) => {
    const body = h('tbody');
    const empty = h('p', { class: 'muted', hidden: true }, 'No worker has connected yet. Start one with ',
      h('code', {}, 'tessera-worker --coordinator HOST:PORT --token tw_… --pin FINGERPRINT'), '.');
    fill(main, h('h1', {}, 'Workers'),
      h('div', { class: 'table-wrap' }, h('table', { id: 'workers', class: 'list' },
        h('thead', {}, h('tr', {},
          h('th', { scope: 'col' }, 'Name'), h('th', { scope: 'col' }, 'State'),
          h('th', { scope: 'col', class: 'wide' }, 'Slots'), h('th', { scope: 'col', class: 'wide' }, 'Memory'),
          h('th', { scope: 'col', class: 'wide' }, 'GPU'), h('th', { scope: 'col' }, 'Trust'),
          h('th', { scope: 'col', class: 'wide' }, 'Reputation'), h('th', { scope: 'col' }, 'Credit'),
          h('th', { scope: 'col', class: 'wide' }, 'Verified tiles'), h('th', { scope: 'col', class: 'wide' }, 'Failed checks'),
          h('th', { scope: 'col' }, 'Current tiles'), h('th', { scope: 'col', class: 'wide' }, 'Last seen'))),
        body)),
      empty);
    const load = async () => {
      const { workers } = await api.json('/api/v1/workers', { signal });
      empty.hidden = workers.length > 0;
      fill(body, workers.map(w => {
        const c = w.capabilities;
        return h('tr', { dataset: { worker: w.identity } },
          h('td', {}, w.name, h('br'), h('code', { class: 'muted', title: w.identity }, short(w.identity))),
          h('td', {}, h('span', { class: `badge worker-${w.state}` }, w.state === 'offline' ? 'offline' : `online · ${w.state}`)),
          h('td', { class: 'wide' }, c ? `${c.slots} (${c.cores} cores)` : '—'),
          h('td', { class: 'wide' }, c ? bytes(c.memory_bytes) : '—'),
          h('td', { class: 'wide' }, (c && c.gpu) || 'none'),
          h('td', {}, trustBadge(w.trust_level), h('span', { class: 'muted' }, ` ${w.trust}`)),
          h('td', { class: 'wide' }, w.reputation === null || w.reputation === undefined ? '—' : percent(w.reputation)),
          h('td', {}, w.credit === null || w.credit === undefined ? '—' : w.credit.toFixed(3)),
          h('td', { class: 'wide' }, w.verified_tiles),
          h('td', { class: 'wide' }, w.failed_checks),
          h('td', {}, w.leases),
          h('td', { class: 'wide' }, when(w.last_seen_ms)));
      }));
    };
    await load();
    const refresh = throttle(() => load().catch(() => {}), 1000);
    api.follow('/api/v1/events', name => { if (name === 'worker' || name === 'tile' || name === 'reconnected') refresh(); }, signal);
    const timer = setInterval(refresh, 5000);
    signal.addEventListener('abort', () => clearInterval(timer));
  };
}
