/**
 * `HanaModel`: follows the server's state events and runs the sidebar's actions.
 *
 * One model per Lab page, shared by the sidebar, the status-bar item and the commands. It holds
 * the latest `IServerState` (see state.ts), reconnects with backoff when the stream fails, and
 * emits `changed` on every update and once a second for the countdowns (local, no traffic).
 *
 * Reading state never counts as user activity: the events and status routes are excluded on the
 * server. /api/tags (a tracked route) is read only at the first connection, when an event names
 * a model it did not list or a pull finished, and on Refresh.
 */
import { ServerConnection } from '@jupyterlab/services';
import { IDisposable } from '@lumino/disposable';
import { ISignal, Signal } from '@lumino/signaling';

import { followEvents, HanaRequestError, requestJSON } from './api';
import {
  applyEvent,
  Backoff,
  disconnected,
  emptyState,
  IServerEvent,
  IPull,
  IServerState,
  unknownModels,
  withPulls
} from './state';

/** A line under a model's row. */
export interface IMessage {
  text: string;
  error: boolean;
}

interface ITags {
  models?: { name: string; remote_host?: string }[];
}

interface IStatus {
  settings?: { keep_alive?: string };
  pulls?: IPull[];
}

export class HanaModel implements IDisposable {
  constructor(
    readonly serverSettings: ServerConnection.ISettings = ServerConnection.makeSettings()
  ) {}

  /** The latest state; replaced (never mutated) on each change. */
  get state(): IServerState {
    return this._state;
  }

  /** The server's default keep-alive ("5m"), once the status was read. */
  get defaultKeepAlive(): string {
    return this._defaultKeepAlive;
  }

  /** Emitted on every state change and once a second (countdowns). */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /** Models with a Warm up / Unload / keep-alive request in flight. */
  get pending(): ReadonlySet<string> {
    return this._pending;
  }

  /** A message per model from the latest action: its failure, or a note. */
  get messages(): ReadonlyMap<string, IMessage> {
    return this._messages;
  }

  get isDisposed(): boolean {
    return this._disposed;
  }

  /** Start following the server (idempotent). */
  start(): void {
    if (this._running || this._disposed) {
      return;
    }
    this._running = true;
    void this._follow();
    this._ticker = window.setInterval(() => this._changed.emit(), 1000);
  }

  /** Re-read the installed models; reconnect now if the server was unreachable. */
  refresh(): void {
    if (this._state.connected) {
      void this._loadInstalled().catch(() => undefined);
    } else {
      this._listed = false;
      this._wake?.();
    }
  }

  /** Load `model` now, kept for `keepAlive` (a Go duration or seconds) or the server default. */
  async warm(model: string, keepAlive?: string | number): Promise<void> {
    await this._generate(model, keepAlive, 'warm up');
  }

  /** Unload `model` as soon as its requests finish. */
  async unload(model: string): Promise<void> {
    await this._generate(model, 0, 'unload');
  }

  /** Change a loaded model's keep-alive (sending it to a model not loaded would load it). */
  async setKeepAlive(model: string, keepAlive: string | number): Promise<void> {
    await this._generate(model, keepAlive, 'keep-alive');
  }

  /** Unload every loaded model. */
  async unloadAll(): Promise<void> {
    await Promise.all([...this._state.runners.keys()].map(m => this.unload(m)));
  }

  /** Show a note (or clear it) on a model's row. */
  note(model: string, text: string, error = false): void {
    if (text) {
      this._messages.set(model, { text, error });
    } else {
      this._messages.delete(model);
    }
    this._changed.emit();
  }

  dispose(): void {
    if (this._disposed) {
      return;
    }
    this._disposed = true;
    this._abort.abort();
    this._wake?.();
    window.clearInterval(this._ticker);
    Signal.clearData(this);
  }

  // ---- following the server ------------------------------------------------------------------

  private async _follow(): Promise<void> {
    const backoff = new Backoff();
    while (!this._disposed) {
      let problem: string;
      try {
        if (!this._listed) {
          // Once: a reconnect learns of new models from the events (and Refresh re-reads),
          // so a flaky network does not turn into tracked requests.
          await this._loadInstalled();
        }
        await followEvents(
          this.serverSettings,
          event => this._apply(event, backoff),
          this._abort.signal
        );
        problem = 'the server closed the event stream';
      } catch (error) {
        problem =
          error instanceof HanaRequestError
            ? error.message
            : `server unreachable: ${String(error)}`;
      }
      if (this._disposed) {
        return;
      }
      const delay = backoff.next();
      console.warn(`hana: ${problem}; reconnecting in ${delay} ms`);
      this._set(
        disconnected(this._state, `${problem}; retrying in ${delay / 1000} s`)
      );
      await new Promise<void>(resolve => {
        const timer = window.setTimeout(resolve, delay);
        this._wake = () => {
          window.clearTimeout(timer);
          resolve();
        };
      });
      this._wake = null;
    }
  }

  private _apply(event: IServerEvent, backoff: Backoff): void {
    backoff.reset(); // the stream works: the next failure retries quickly
    this._set(applyEvent(this._state, event));
    const pulled = event.event === 'pull' && event.status === 'success';
    if ((pulled || unknownModels(this._state).length) && !this._reloading) {
      this._reloading = true; // created since we listed the models
      void this._loadInstalled()
        .catch(() => undefined) // the stream notices a dead server and says so
        .finally(() => (this._reloading = false));
    }
  }

  private async _loadInstalled(): Promise<void> {
    const [tags, status] = await Promise.all([
      requestJSON<ITags>(this.serverSettings, 'api/tags'),
      requestJSON<IStatus>(this.serverSettings, 'api/hana/status').catch(
        () => null
      )
    ]);
    this._listed = true;
    this._defaultKeepAlive =
      status?.settings?.keep_alive ?? this._defaultKeepAlive;
    const installed = (tags.models ?? []).map(m => String(m.name));
    const remotes = new Map(
      (tags.models ?? [])
        .filter(m => m.remote_host)
        .map(m => [String(m.name), String(m.remote_host)])
    );
    const state = { ...this._state, installed, remotes };
    this._set(status?.pulls ? withPulls(state, status.pulls) : state);
  }

  private _set(state: IServerState): void {
    this._state = state;
    this._changed.emit();
  }

  // ---- actions -------------------------------------------------------------------------------

  private async _generate(
    model: string,
    keepAlive: string | number | undefined,
    what: string
  ): Promise<void> {
    this._pending.add(model);
    this._messages.delete(model);
    this._changed.emit();
    try {
      // An empty prompt loads the model and sets its keep-alive; keep_alive 0 unloads it.
      await requestJSON(this.serverSettings, 'api/generate', {
        method: 'POST',
        body: JSON.stringify({
          model,
          prompt: '',
          stream: false,
          ...(keepAlive === undefined ? {} : { keep_alive: keepAlive })
        })
      });
    } catch (error) {
      const text = error instanceof Error ? error.message : String(error);
      this._messages.set(model, { text: `${what}: ${text}`, error: true });
      throw error;
    } finally {
      this._pending.delete(model);
      this._changed.emit();
    }
  }

  private _state: IServerState = emptyState();
  private _defaultKeepAlive = '';
  private _changed = new Signal<this, void>(this);
  private _pending = new Set<string>();
  private _messages = new Map<string, IMessage>();
  private _abort = new AbortController();
  private _wake: (() => void) | null = null;
  private _ticker = 0;
  private _running = false;
  private _reloading = false;
  private _listed = false;
  private _disposed = false;
}
