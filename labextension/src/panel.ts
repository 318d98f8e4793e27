/**
 * The "hana" sidebar: one row per model (state, busy n/N, queued, memory, context, keep-alive
 * countdown, tokens/s, pulling %) with Warm up / Unload / keep-alive controls.
 *
 * Plain DOM under a Lumino widget: rows are kept by model name and only their text changes on
 * each update, so a keep-alive chooser the user has open is not rebuilt under the mouse by the
 * once-a-second countdown.
 */
import { refreshIcon } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';

import { HanaModel, IMessage } from './model';
import {
  describeKeepAlive,
  IRow,
  KEEP_ALIVE_CHOICES,
  keepAliveChoice,
  parseKeepAlive,
  rows,
  summary
} from './state';

function element<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  className: string,
  parent?: HTMLElement
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  node.className = className;
  parent?.appendChild(node);
  return node;
}

/** "a · b · c" that wraps only between cells ("ctx 4096" stays together). */
function joinCells(cells: string[]): string {
  return cells
    .filter(Boolean)
    .join(' · ')
    .split(' · ')
    .map(cell => cell.replace(/ /g, '\u00a0'))
    .join(' · ');
}

/** One model's row; `update(row)` repaints it from the computed view. */
class RowView {
  constructor(
    readonly model: string,
    private _hana: HanaModel
  ) {
    const node = (this.node = element('div', 'jp-hana-row'));
    node.dataset.model = model;
    const head = element('div', 'jp-hana-row-head', node);
    const name = element('span', 'jp-hana-name', head);
    name.textContent = model;
    name.title = model;
    this._badge = element('span', 'jp-hana-badge', head);
    this._progress = element('progress', 'jp-hana-progress', head);
    this._progress.max = 1;
    this._details = element('div', 'jp-hana-details jp-hana-runner', node);
    this._timing = element('div', 'jp-hana-details jp-hana-timing', node);
    const controls = element('div', 'jp-hana-controls', node);
    this._warm = element('button', 'jp-mod-styled jp-hana-warm', controls);
    this._warm.textContent = 'Warm up';
    this._warm.title = 'Load the model now';
    this._warm.onclick = () => this._onWarm();
    this._unload = element('button', 'jp-mod-styled jp-hana-unload', controls);
    this._unload.textContent = 'Unload';
    this._unload.title = 'Unload as soon as it is idle';
    this._unload.onclick = () =>
      void this._hana.unload(this.model).catch(() => undefined);
    this._chooser = element('select', 'jp-hana-keep-alive', controls);
    this._chooser.title = 'How long the model stays loaded after its last use';
    for (const [label, value] of KEEP_ALIVE_CHOICES) {
      const option = element('option', '', this._chooser);
      option.value = value;
      option.textContent = label;
    }
    this._chooser.onchange = () => this._onKeepAlive();
    this._custom = element('input', 'jp-mod-styled jp-hana-custom', controls);
    this._custom.placeholder = 'e.g. 2h';
    this._custom.onchange = () => this._onKeepAlive();
    this._message = element('div', 'jp-hana-message', node);
  }

  readonly node: HTMLDivElement;

  /** The keep-alive the chooser shows, as sent to the server ("5m", "-1", "90s"). */
  get chosen(): string {
    return this._chooser.value === 'custom'
      ? this._custom.value.trim()
      : this._chooser.value;
  }

  update(row: IRow, pending: boolean, message: IMessage | undefined): void {
    this.node.dataset.state = row.state;
    this._badge.textContent = row.badge;
    this._badge.dataset.state = row.state;
    this._progress.style.display = ['loading', 'pulling'].includes(row.state)
      ? ''
      : 'none';
    this._progress.value = row.loadProgress;
    this._details.textContent = joinCells([
      row.runner,
      row.memory,
      row.context && `ctx ${row.context}`
    ]);
    this._timing.textContent = joinCells([row.countdown, row.speed]);
    this._warm.disabled = pending || !row.canWarm;
    this._unload.disabled = pending || !row.canUnload;
    // A remote model runs elsewhere: nothing to warm up, unload or keep alive here.
    for (const control of [this._warm, this._unload, this._chooser]) {
      control.style.display = row.remote ? 'none' : '';
    }
    this._loaded = row.loaded;
    // keep_alive 0 is an unload in progress, not a choice to offer for the next Warm up.
    if (row.keepAlive && row.keepAlive !== this._followed) {
      // Follow the server only when its value changes, so a choice just made is not reverted
      // by a snapshot that predates it.
      this._followed = row.keepAlive;
      const { value, custom } = keepAliveChoice(row.keepAlive);
      this._chooser.value = value;
      if (value === 'custom') {
        this._custom.value = custom;
      }
    }
    this._custom.style.display =
      this._chooser.value === 'custom' && !row.remote ? '' : 'none';
    const text = row.error || message?.text || '';
    this._message.textContent = text;
    this._message.classList.toggle(
      'jp-hana-error',
      !!row.error || !!message?.error
    );
    this._message.style.display = text ? '' : 'none';
  }

  /** Before the first snapshot of a loaded runner: start from the server's default. */
  setDefault(keepAlive: string): void {
    if (this._followed === null && keepAlive) {
      try {
        const { value, custom } = keepAliveChoice(
          parseKeepAlive(keepAlive).seconds
        );
        this._chooser.value = value;
        this._custom.value = custom;
      } catch {
        // the server's own setting: Go duration or seconds, always parses
      }
    }
  }

  private _onWarm(): void {
    const chosen = this.chosen;
    let keepAlive: string | number | undefined;
    try {
      keepAlive = chosen ? parseKeepAlive(chosen).value : undefined;
    } catch {
      keepAlive = undefined; // the chooser already says what is wrong
    }
    void this._hana.warm(this.model, keepAlive).catch(() => undefined);
  }

  private _onKeepAlive(): void {
    this._custom.style.display = this._chooser.value === 'custom' ? '' : 'none';
    const chosen = this.chosen;
    if (!chosen) {
      return;
    }
    let parsed: { value: string | number; seconds: number };
    try {
      parsed = parseKeepAlive(chosen);
    } catch (error) {
      const reason = (error as Error).message;
      this._hana.note(this.model, `keep-alive "${chosen}": ${reason}`, true);
      return;
    }
    if (!this._loaded) {
      // Sending it would load the model: keep it for the next Warm up.
      this._hana.note(
        this.model,
        `Warm up keeps it ${describeKeepAlive(parsed.seconds)}`
      );
      return;
    }
    this._hana.note(this.model, '');
    if (parsed.seconds !== this._followed) {
      void this._hana
        .setKeepAlive(this.model, parsed.value)
        .catch(() => undefined);
    }
  }

  private _badge: HTMLSpanElement;
  private _progress: HTMLProgressElement;
  private _details: HTMLDivElement;
  private _timing: HTMLDivElement;
  private _warm: HTMLButtonElement;
  private _unload: HTMLButtonElement;
  private _chooser: HTMLSelectElement;
  private _custom: HTMLInputElement;
  private _message: HTMLDivElement;
  private _followed: number | null = null;
  private _loaded = false;
}

/** The sidebar widget. */
export class HanaPanel extends Widget {
  constructor(private _hana: HanaModel) {
    super();
    this.addClass('jp-hana-panel');
    const header = element('div', 'jp-hana-header', this.node);
    const title = element('span', 'jp-hana-title', header);
    title.textContent = 'hana';
    this._status = element('span', 'jp-hana-status', header);
    const refresh = element(
      'button',
      'jp-hana-refresh jp-Button jp-mod-minimal',
      header
    );
    refresh.title =
      'Re-read the installed models; reconnect now if the server was unreachable';
    refreshIcon.element({ container: refresh, height: '16px', width: '16px' });
    refresh.onclick = () => this._hana.refresh();
    this._list = element('div', 'jp-hana-rows', this.node);
    this._empty = element('div', 'jp-hana-empty', this.node);
    this._empty.textContent =
      'No models installed. Create one with `hana create NAME -f Modelfile`.';
    _hana.changed.connect(this._render, this);
    this._render();
  }

  dispose(): void {
    this._hana.changed.disconnect(this._render, this);
    super.dispose();
  }

  private _render(): void {
    if (!this.isVisible && this._rendered) {
      return; // hidden: repaint when shown
    }
    this._rendered = true;
    const state = this._hana.state;
    this._status.textContent = state.connected
      ? summary(state).replace(/^hana: /, '')
      : state.problem;
    this._status.dataset.connected = String(state.connected);
    const current = rows(state, Date.now());
    const names = new Set(current.map(r => r.model));
    for (const [name, view] of this._views) {
      if (!names.has(name)) {
        view.node.remove();
        this._views.delete(name);
      }
    }
    current.forEach((row, index) => {
      let view = this._views.get(row.model);
      if (!view) {
        view = new RowView(row.model, this._hana);
        view.setDefault(this._hana.defaultKeepAlive);
        this._views.set(row.model, view);
      }
      view.update(
        row,
        this._hana.pending.has(row.model),
        this._hana.messages.get(row.model)
      );
      if (this._list.children[index] !== view.node) {
        this._list.insertBefore(view.node, this._list.children[index] ?? null);
      }
    });
    this._empty.style.display =
      state.connected && current.length === 0 ? '' : 'none';
  }

  protected onAfterShow(): void {
    this._render();
  }

  private _status: HTMLSpanElement;
  private _list: HTMLDivElement;
  private _empty: HTMLDivElement;
  private _views = new Map<string, RowView>();
  private _rendered = false;
}
