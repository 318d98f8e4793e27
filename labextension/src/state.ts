/**
 * What the sidebar and the status bar show, computed from the server's state events.
 *
 * Pure functions and plain data only (no JupyterLab imports), so the node test runner checks
 * them directly. The rules follow the kernel's runner panel (hana_jupyter/panel_row.py): the
 * same badge text, countdown and formats, because both show the same server state.
 */

/** One `/api/ps` entry as hana writes it (Ollama's fields plus hana's). */
export interface IRunner {
  name: string;
  state?: string;
  in_flight?: number;
  queued?: number;
  num_parallel?: number;
  size?: number;
  context_length?: number;
  expires_at?: string;
  keep_alive?: number | null;
  load_progress?: number;
  tokens_per_second?: number | null;
  pid?: number | null;
  port?: number | null;
  /** A remote model's upstream (state "remote"): served elsewhere, nothing to load here. */
  remote_host?: string;
  remote_model?: string;
}

/** A server-sent event's JSON (`data:`); `event` names its kind. */
export interface IServerEvent {
  event?: string;
  models?: IRunner[];
  waiting?: { name: string; queued: number }[];
  model?: string;
  pid?: number;
  error?: string;
  /** `pull` events: pulling | success | error, with bytes `completed` of `total`. */
  status?: string;
  completed?: number;
  total?: number;
  [key: string]: unknown;
}

/** Everything known about the server, as the latest events left it. */
export interface IServerState {
  connected: boolean;
  /** Why the server cannot be reached (empty while connected). */
  problem: string;
  /** Installed models, in /api/tags order. */
  installed: string[];
  runners: Map<string, IRunner>;
  waiting: Map<string, number>;
  /** The latest failure per model (load failed, runner crashed, pull failed). */
  errors: Map<string, string>;
  /** Pulls in progress: the fraction done per model. */
  pulls: Map<string, number>;
  /** Remote models (from /api/tags) and the upstream each runs on. */
  remotes?: Map<string, string>;
}

/** One pull as the status snapshot (`pulls`) and `pull` events give it. */
export interface IPull {
  model: string;
  completed?: number;
  total?: number;
}

function fraction(pull: { completed?: number; total?: number }): number {
  return pull.total
    ? Math.min(1, (Number(pull.completed) || 0) / pull.total)
    : 0;
}

/** The pulls a status snapshot lists (the events say how they go on). */
export function withPulls(state: IServerState, pulls: IPull[]): IServerState {
  return {
    ...state,
    pulls: new Map(pulls.map(p => [String(p.model), fraction(p)]))
  };
}

const CONNECTING = 'connecting…';

export function emptyState(): IServerState {
  return {
    connected: false,
    problem: CONNECTING,
    installed: [],
    runners: new Map(),
    waiting: new Map(),
    errors: new Map(),
    pulls: new Map()
  };
}

/**
 * The state after one server event. A `state` event replaces the runners and waiting counts
 * (each is a full snapshot); `load_failed` and `crashed` leave a message on the model's row,
 * and a new load clears it.
 */
export function applyEvent(
  state: IServerState,
  event: IServerEvent
): IServerState {
  const next = { ...state, connected: true, problem: '' };
  if (event.event === 'state') {
    next.runners = new Map((event.models ?? []).map(r => [String(r.name), r]));
    next.waiting = new Map(
      (event.waiting ?? []).map(w => [String(w.name), Number(w.queued) || 0])
    );
    const errors = new Map(state.errors);
    for (const [name, runner] of next.runners) {
      if (
        runner.state === 'loading' &&
        state.runners.get(name)?.state !== 'loading'
      ) {
        errors.delete(name); // a new load: the last failure is history
      }
    }
    next.errors = errors;
  } else if (event.event === 'pull') {
    const model = String(event.model);
    const pulls = new Map(state.pulls);
    const errors = new Map(state.errors);
    if (event.status === 'pulling') {
      pulls.set(model, fraction(event));
      errors.delete(model);
    } else {
      pulls.delete(model);
      if (event.status === 'error') {
        errors.set(model, `pull failed: ${event.error}`);
      }
    }
    next.pulls = pulls;
    next.errors = errors;
  } else if (event.event === 'load_failed' || event.event === 'crashed') {
    const errors = new Map(state.errors);
    errors.set(
      String(event.model),
      event.event === 'crashed'
        ? `runner crashed (pid ${event.pid})`
        : `load failed: ${event.error}`
    );
    next.errors = errors;
  }
  return next;
}

/** Models the events name that /api/tags did not list (created since): time to re-read it. */
export function unknownModels(state: IServerState): string[] {
  const known = new Set(state.installed);
  return [...state.runners.keys(), ...state.waiting.keys()].filter(
    name => !known.has(name)
  );
}

/** The state once the connection is lost: nothing is known until it is back. */
export function disconnected(
  state: IServerState,
  problem: string
): IServerState {
  return { ...state, connected: false, problem };
}

// ------------------------------------------------------------------------------- formats

/** Bytes as Ollama's CLI writes them: "291 MB", "1.2 GB". */
export function formatSize(size: number): string {
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let value = size;
  for (const unit of units) {
    if (Math.abs(value) < 1000 || unit === 'TB') {
      return ['B', 'KB', 'MB'].includes(unit)
        ? `${Math.round(value)} ${unit}`
        : `${value.toFixed(1)} ${unit}`;
    }
    value /= 1000;
  }
  return `${size} B`;
}

/** A duration as people say it: "4m59s", "1h30m", "0s". */
export function formatDuration(seconds: number): string {
  const total = Math.max(0, Math.round(seconds));
  const hours = Math.floor(total / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const secs = total % 60;
  const text =
    (hours ? `${hours}h` : '') +
    (minutes ? `${minutes}m` : '') +
    (secs ? `${secs}s` : '');
  return text || '0s';
}

/** A keep-alive in seconds as shown: "forever" for a negative one. */
export function describeKeepAlive(seconds: number): string {
  return seconds < 0 ? 'forever' : formatDuration(seconds);
}

const UNITS: Record<string, number> = {
  ns: 1e-9,
  us: 1e-6,
  µs: 1e-6,
  μs: 1e-6,
  ms: 1e-3,
  s: 1,
  m: 60,
  h: 3600
};

/**
 * A keep-alive the user typed, as the API takes it: a number of seconds (sent as a JSON number,
 * negative = forever) or a Go duration ("2h", "1h30m", "90s"). Throws with Go's message when
 * it is neither, so the row can say why before anything is sent.
 */
export function parseKeepAlive(text: string): {
  value: number | string;
  seconds: number;
} {
  const s = text.trim();
  if (/^-?\d+(\.\d+)?$/.test(s)) {
    const seconds = Number(s);
    return { value: seconds, seconds: seconds < 0 ? -1 : seconds };
  }
  const sign = s.startsWith('-') ? -1 : 1;
  const body = s.replace(/^[+-]/, '');
  if (body === '0') {
    return { value: s, seconds: 0 };
  }
  const part = /(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)/y;
  let total = 0;
  let pos = 0;
  while (body && pos < body.length) {
    part.lastIndex = pos;
    const match = part.exec(body);
    if (!match) {
      throw new Error(`time: invalid duration "${text}"`);
    }
    total += Number(match[1]) * UNITS[match[2]];
    pos = part.lastIndex;
  }
  if (!body) {
    throw new Error(`time: invalid duration "${text}"`);
  }
  const seconds = sign * total;
  return { value: s, seconds: seconds < 0 ? -1 : seconds };
}

/** The keep-alive chooser: (label, value sent to the server); "custom" shows a text box. */
export const KEEP_ALIVE_CHOICES: ReadonlyArray<[string, string]> = [
  ['5m', '5m'],
  ['30m', '30m'],
  ['1h', '1h'],
  ['forever', '-1'],
  ['custom…', 'custom']
];

const PRESETS: Record<number, string> = { 300: '5m', 1800: '30m', 3600: '1h' };

/** The chooser's value and custom text for a keep-alive in seconds (-1 = forever). */
export function keepAliveChoice(seconds: number | null | undefined): {
  value: string;
  custom: string;
} {
  if (seconds === null || seconds === undefined) {
    return { value: '5m', custom: '' };
  }
  if (seconds < 0) {
    return { value: '-1', custom: '' };
  }
  if (PRESETS[seconds]) {
    return { value: PRESETS[seconds], custom: '' };
  }
  return { value: 'custom', custom: formatDuration(seconds) };
}

// ------------------------------------------------------------------------------- rows

/** One model's row, ready to paint. */
export interface IRow {
  model: string;
  /** unloaded | queued | loading | ready | busy | expiring | unknown */
  state: string;
  badge: string;
  loadProgress: number;
  loaded: boolean;
  runner: string;
  memory: string;
  context: string;
  countdown: string;
  speed: string;
  /** The server's keep-alive in seconds (-1 forever); null when not loaded. */
  keepAlive: number | null;
  error: string;
  canWarm: boolean;
  canUnload: boolean;
  /** A remote model: no warm-up, unload or keep-alive controls. */
  remote: boolean;
}

function countdown(
  state: string,
  keepAlive: number | null,
  expiresAt: string,
  now: number
): string {
  if (
    keepAlive === null ||
    ['unloaded', 'unknown', 'queued', 'remote'].includes(state)
  ) {
    return '';
  }
  if (state === 'expiring') {
    return 'unloading…';
  }
  if (keepAlive < 0) {
    return 'forever';
  }
  if (state === 'loading' || state === 'busy') {
    return `${describeKeepAlive(keepAlive)} after idle`; // the timer starts when idle
  }
  const expires = Date.parse(expiresAt);
  if (Number.isNaN(expires)) {
    return '';
  }
  const left = (expires - now) / 1000;
  return left >= 0.5 ? `unloads in ${formatDuration(left)}` : 'unloading…';
}

/** What one row is made of; everything but the model name may be left out. */
export interface IRowInput {
  /** The model's runner; none when it is not loaded. */
  runner?: IRunner;
  /** Requests waiting for a runner of this model. */
  waiting?: number;
  /** False while the server cannot be reached (default true). */
  connected?: boolean;
  error?: string;
  /** The fraction pulled, while a pull of this model runs. */
  pulling?: number;
  /** The upstream of a remote model (from /api/tags). */
  remote?: string;
}

/** One row from a runner entry (or none: not loaded) and the requests waiting for it. */
export function rowFor(model: string, input: IRowInput, now: number): IRow {
  const { runner, waiting = 0, connected = true, error = '', pulling } = input;
  const remoteHost = runner?.remote_host || input.remote || '';
  if (!connected) {
    return {
      model,
      state: 'unknown',
      badge: 'unknown',
      loadProgress: 0,
      loaded: false,
      runner: '',
      memory: '',
      context: '',
      countdown: '',
      speed: '',
      keepAlive: null,
      error,
      canWarm: false,
      canUnload: false,
      remote: remoteHost !== ''
    };
  }
  if (remoteHost) {
    return remoteRow(model, remoteHost, runner, waiting, error);
  }
  const loaded = runner !== undefined;
  const state = loaded
    ? String(runner.state || 'ready')
    : waiting
      ? 'queued'
      : pulling !== undefined
        ? 'pulling'
        : 'unloaded';
  const queued = (loaded ? Number(runner.queued) || 0 : 0) + waiting;
  const progress = loaded ? Number(runner.load_progress) || 0 : (pulling ?? 0);
  let badge: string;
  if (state === 'queued') {
    badge = `queued ${queued}`;
  } else if (state === 'pulling') {
    badge = `pulling ${Math.floor(progress * 100)}%`;
  } else {
    badge =
      state === 'loading'
        ? `loading ${Math.round(progress * 100)}%`
        : state === 'busy'
          ? `busy ${runner?.in_flight ?? 0}/${runner?.num_parallel || 1}`
          : state;
    if (queued) {
      badge += ` · queued ${queued}`;
    }
  }
  const keepAlive =
    loaded && typeof runner.keep_alive === 'number' ? runner.keep_alive : null;
  const speed = loaded ? runner.tokens_per_second : null;
  return {
    model,
    state,
    badge,
    loadProgress: progress,
    loaded,
    runner:
      loaded && runner.pid !== null && runner.pid !== undefined
        ? `pid ${runner.pid} · :${runner.port}`
        : '',
    memory: loaded && runner.size ? formatSize(runner.size) : '',
    context:
      loaded && runner.context_length ? String(runner.context_length) : '',
    countdown: countdown(state, keepAlive, runner?.expires_at ?? '', now),
    speed: speed ? `${speed.toFixed(speed >= 100 ? 0 : 1)} tok/s` : '',
    keepAlive,
    error,
    canWarm: !['loading', 'ready', 'busy', 'pulling'].includes(state),
    canUnload: !['unloaded', 'queued', 'expiring', 'pulling'].includes(state),
    remote: false
  };
}

/** A remote model's row: requests in flight and queued at its upstream; no runner here. */
function remoteRow(
  model: string,
  host: string,
  runner: IRunner | undefined,
  waiting: number,
  error: string
): IRow {
  const inFlight = Number(runner?.in_flight) || 0;
  const queued = (Number(runner?.queued) || 0) + waiting;
  let badge = inFlight
    ? `remote ${inFlight}/${runner?.num_parallel || 1}`
    : 'remote';
  if (queued) {
    badge += ` · queued ${queued}`;
  }
  const speed = runner?.tokens_per_second;
  return {
    model,
    state: 'remote',
    badge,
    loadProgress: 0,
    loaded: false,
    runner: `→ ${host}`,
    memory: '',
    context: runner?.context_length ? String(runner.context_length) : '',
    countdown: '',
    speed: speed ? `${speed.toFixed(speed >= 100 ? 0 : 1)} tok/s` : '',
    keepAlive: null,
    error,
    canWarm: false,
    canUnload: false,
    remote: true
  };
}

/**
 * Every row: installed models and any the events name, loaded ones first, each group in the
 * stable order of /api/tags (the server's own order moves a model to the top whenever it is
 * used, which would make rows jump under the mouse).
 */
export function rows(state: IServerState, now: number): IRow[] {
  const names = [
    ...new Set([
      ...state.installed,
      ...state.runners.keys(),
      ...state.waiting.keys(),
      ...state.pulls.keys()
    ])
  ];
  const ordered = [
    ...names.filter(n => state.runners.has(n)),
    ...names.filter(n => !state.runners.has(n))
  ];
  return ordered.map(name =>
    rowFor(
      name,
      {
        runner: state.runners.get(name),
        waiting: state.waiting.get(name) ?? 0,
        connected: state.connected,
        error: state.errors.get(name) ?? '',
        pulling: state.pulls.get(name),
        remote: state.remotes?.get(name)
      },
      now
    )
  );
}

/** The status bar's text: "hana: 2 loaded · 1 busy" (· q queued), or why it is unknown. */
export function summary(state: IServerState): string {
  if (!state.connected) {
    return state.problem === CONNECTING ? 'hana: connecting…' : 'hana: offline';
  }
  const runners = [...state.runners.values()].filter(r => r.state !== 'remote');
  const busy = runners.filter(r => r.state === 'busy').length;
  const queued =
    [...state.waiting.values()].reduce((a, b) => a + b, 0) +
    runners.reduce((a, r) => a + (Number(r.queued) || 0), 0);
  const parts = [`${runners.length} loaded`, `${busy} busy`];
  if (queued) {
    parts.push(`${queued} queued`);
  }
  if (state.pulls.size) {
    parts.push(`${state.pulls.size} pulling`);
  }
  return `hana: ${parts.join(' · ')}`;
}

// ------------------------------------------------------------------------------- transport

/**
 * An incremental `text/event-stream` decoder: feed it text as it arrives, get the JSON of each
 * complete event's `data:` lines. Comments (`: keep-alive`) are skipped; hana puts the event
 * name inside its JSON, so the `event:` field is not needed.
 */
export class EventStreamParser {
  private _buffer = '';
  private _data: string[] = [];

  feed(text: string): IServerEvent[] {
    this._buffer += text;
    const events: IServerEvent[] = [];
    let newline: number;
    while ((newline = this._buffer.search(/\r\n|\r|\n/)) >= 0) {
      const line = this._buffer.slice(0, newline);
      const width = this._buffer.startsWith('\r\n', newline) ? 2 : 1;
      if (
        this._buffer[newline] === '\r' &&
        newline + 1 === this._buffer.length
      ) {
        break; // a lone \r at the end may be the first half of \r\n
      }
      this._buffer = this._buffer.slice(newline + width);
      if (!line) {
        if (this._data.length) {
          events.push(JSON.parse(this._data.join('\n')) as IServerEvent);
          this._data = [];
        }
        continue;
      }
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      if (field === 'data') {
        const value = line.slice(colon + 1);
        this._data.push(value.startsWith(' ') ? value.slice(1) : value);
      }
    }
    return events;
  }
}

/** Reconnect delays: `first`, doubling up to `max`, back to `first` after a good connection. */
export class Backoff {
  private _next: number;

  constructor(
    readonly first = 500,
    readonly max = 10000
  ) {
    this._next = first;
  }

  /** The delay before the next attempt (and double the one after it). */
  next(): number {
    const delay = this._next;
    this._next = Math.min(this._next * 2, this.max);
    return delay;
  }

  reset(): void {
    this._next = this.first;
  }
}
