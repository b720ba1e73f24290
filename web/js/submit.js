// New render: drop or pick a scene (a .glb, or a .gltf with its .bin and
// textures), let the server read it (POST /api/v1/scenes/inspect: the same
// sandboxed check a submission gets), pre-fill the settings from what it
// found, and submit (POST /api/v1/jobs) with upload progress.

import * as api from './api.js';
import { h, fill, bytes, errorBox } from './ui.js';

const SCENE = /\.(glb|gltf)$/i;

function field(id, label, input, hint) {
  input.id = id;
  input.name = id;
  return h('div', { class: 'field' }, h('label', { for: id }, label), input, hint ? h('small', { class: 'hint' }, hint) : null);
}

function number(value, attrs = {}) {
  return h('input', { type: 'number', inputmode: 'numeric', value, ...attrs });
}

/** The form's data as the API's multipart form. */
function formData(scene, resources, settings) {
  const form = new FormData();
  if (settings) form.append('settings', JSON.stringify(settings));
  form.append('scene', scene, scene.name);
  for (const file of resources) form.append('resource', file, file.webkitRelativePath || file.name);
  return form;
}

export function submitView() {
  return async (main, signal) => {
    const input = h('input', {
      id: 'file', type: 'file', multiple: true, class: 'visually-hidden',
      accept: '.glb,.gltf,.bin,.png,.jpg,.jpeg,.webp,.ktx2',
    });
    const fileError = h('div', { id: 'scene-error-box' });
    const summary = h('div', { id: 'scene-summary', hidden: true });
    const formBox = h('div');
    const drop = h('label', { for: 'file', class: 'drop', id: 'drop' },
      h('strong', {}, 'Drop a scene here'), h('span', {}, ' or '), h('span', { class: 'link' }, 'choose files'),
      h('small', { class: 'hint' }, 'A .glb, or a .gltf with its .bin and texture files. Export from Blender with File › Export › glTF 2.0.'));
    fill(main, h('h1', {}, 'New render'),
      h('section', { class: 'card', 'aria-labelledby': 'scene-heading' },
        h('h2', { id: 'scene-heading' }, 'Scene'), input, drop, fileError, summary),
      formBox);

    let files = null; // { scene, resources }

    const choose = async list => {
      fill(fileError);
      fill(formBox);
      summary.hidden = true;
      const all = [...list];
      const scenes = all.filter(f => SCENE.test(f.name));
      if (scenes.length !== 1) {
        fileError.append(errorBox(scenes.length
          ? `Pick one scene at a time (got ${scenes.map(f => f.name).join(', ')}).`
          : `No .glb or .gltf among ${all.map(f => f.name).join(', ') || 'the files'}.`, 'scene-error'));
        return;
      }
      files = { scene: scenes[0], resources: all.filter(f => f !== scenes[0]) };
      fill(summary, h('p', { class: 'muted' }, `Reading ${files.scene.name}…`));
      summary.hidden = false;
      let info;
      try {
        info = await api.upload('/api/v1/scenes/inspect', formData(files.scene, files.resources), null);
      } catch (e) {
        summary.hidden = true;
        fileError.append(errorBox(`${files.scene.name}: ${e.message}`, 'scene-error'));
        return;
      }
      if (signal.aborted) return;
      fill(summary, h('dl', { class: 'facts' },
        h('dt', {}, 'File'), h('dd', {}, files.scene.name, files.resources.length ? ` + ${files.resources.length} files` : ''),
        h('dt', {}, 'Size'), h('dd', {}, bytes(info.bytes)),
        h('dt', {}, 'Animation'), h('dd', {}, `frames ${info.frame_start}–${info.frame_end}`),
        h('dt', {}, 'Cameras'), h('dd', {}, info.cameras.length ? info.cameras.join(', ') : 'none (a default view is used)')),
        (info.warnings || []).length
          ? h('ul', { id: 'scene-warnings', class: 'warnings', 'aria-label': 'What the renderer will ignore' },
            info.warnings.map(w => h('li', {}, w)))
          : null);
      settingsForm(info);
    };

    const settingsForm = info => {
      const d = info.defaults;
      const name = h('input', { type: 'text', value: info.name, required: true, maxlength: 200 });
      const frames = h('input', { type: 'text', value: info.frame_start === info.frame_end ? `${info.frame_start}` : `${info.frame_start}-${info.frame_end}`, required: true, inputmode: 'numeric' });
      const width = number(info.width, { min: 1, max: 65536, required: true });
      const height = number(info.height, { min: 1, max: 65536, required: true });
      const spp = number(d.spp, { min: 1, max: 1048576, required: true });
      const camera = h('select', {}, info.cameras.map(c => h('option', { value: c }, c)));
      const view = h('select', {}, d.view_transforms.map(v => h('option', { value: v, selected: v === d.view_transform }, v)));
      const exposure = number(d.exposure, { step: 0.1, min: -32, max: 32 });
      const bounces = number(d.bounces, { min: 0, max: 1024 });
      const engine = h('select', {},
        h('option', { value: 'cpu', selected: true }, 'CPU (every tile checked bit for bit)'),
        h('option', { value: 'auto' }, 'GPU where a worker has one, else CPU'),
        h('option', { value: 'gpu' }, 'GPU workers only'));
      const fps = number(d.fps, { step: 'any', min: 0.001, max: 1000 });
      const priority = number(d.priority, { step: 1 });
      const png = h('input', { type: 'checkbox', id: 'format-png', checked: d.formats.includes('png') });
      const exr = h('input', { type: 'checkbox', id: 'format-exr', checked: d.formats.includes('exr') });
      // On by default here: a preview is for looking at. The raw frame ships too.
      const denoise = h('input', { type: 'checkbox', id: 'denoise', checked: true });
      // Also on here: the whole frame appears after its first sample pass
      // and refines; the final frame is the same bit for bit.
      const progressive = h('input', { type: 'checkbox', id: 'progressive', checked: true });
      const error = h('div', { id: 'submit-error-box' });
      const progress = h('progress', { id: 'upload-progress', max: 1, value: 0, hidden: true, 'aria-label': 'upload' });
      const button = h('button', { type: 'submit', class: 'primary', id: 'submit-button' }, 'Render');
      const form = h('form', { id: 'submit-form', class: 'card', novalidate: true },
        h('h2', {}, 'Settings'),
        h('div', { class: 'grid' },
          field('name', 'Job name', name),
          field('frames', 'Frames', frames, 'e.g. 1-48 or 1,5,9-12'),
          field('width', 'Width (px)', width),
          field('height', 'Height (px)', height),
          field('spp', 'Samples per pixel', spp),
          info.cameras.length > 1 ? field('camera', 'Camera', camera) : null,
          field('view', 'View transform (PNG)', view),
          field('exposure', 'Exposure (stops)', exposure),
          field('bounces', 'Bounces', bounces),
          field('engine', 'Engine', engine, 'GPU pixels match the CPU within a tolerance'),
          field('fps', 'Frames per second', fps),
          field('priority', 'Priority', priority, 'higher renders first')),
        h('fieldset', { class: 'formats' }, h('legend', {}, 'Files per frame'),
          h('label', { class: 'check' }, png, ' PNG'), h('label', { class: 'check' }, exr, ' EXR (linear, float)'),
          h('label', { class: 'check' }, denoise, ' Denoised too (the raw frame is kept beside it)'),
          h('label', { class: 'check' }, progressive, ' Progressive (preview each frame after 1, 4, 16, … samples)')),
        error, progress, button);
      form.addEventListener('submit', async e => {
        e.preventDefault();
        fill(error);
        const formats = [png.checked && 'png', exr.checked && 'exr'].filter(Boolean);
        const problems = [];
        if (!formats.length) problems.push('Choose at least one of PNG and EXR.');
        for (const [label, el] of [['Width', width], ['Height', height], ['Samples per pixel', spp]]) {
          if (!(Number(el.value) >= 1)) problems.push(`${label} must be at least 1.`);
        }
        if (!frames.value.trim()) problems.push('Say which frames to render.');
        if (problems.length) {
          error.append(errorBox(problems.join(' '), 'submit-error'));
          return;
        }
        const settings = {
          name: name.value.trim() || info.name,
          frames: frames.value.trim(),
          width: Number(width.value),
          height: Number(height.value),
          spp: Number(spp.value),
          view_transform: view.value,
          exposure: Number(exposure.value) || 0,
          bounces: Number(bounces.value),
          engine: engine.value,
          fps: Number(fps.value),
          priority: Math.trunc(Number(priority.value) || 0),
          formats,
          denoise: denoise.checked,
          progressive: progressive.checked,
        };
        if (info.cameras.length > 1) settings.camera = camera.value;
        button.disabled = true;
        progress.hidden = false;
        try {
          const job = await api.upload('/api/v1/jobs', formData(files.scene, files.resources, settings), f => { progress.value = f; });
          location.hash = `#/jobs/${job.id}`;
        } catch (err) {
          error.append(errorBox(err.message, 'submit-error'));
          button.disabled = false;
          progress.hidden = true;
        }
      });
      fill(formBox, form);
    };

    input.addEventListener('change', () => {
      const picked = [...input.files];
      input.value = ''; // choosing the same file again is a new choice
      if (picked.length) choose(picked);
    });
    drop.addEventListener('dragover', e => { e.preventDefault(); drop.classList.add('over'); });
    drop.addEventListener('dragleave', () => drop.classList.remove('over'));
    drop.addEventListener('drop', e => {
      e.preventDefault();
      drop.classList.remove('over');
      if (e.dataTransfer.files.length) choose(e.dataTransfer.files);
    });
  };
}
