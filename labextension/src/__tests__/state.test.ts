/**
 * The sidebar's state logic: events in, rows and the status-bar text out.
 * Run by `npm test` with node's test runner (its TAP/spec lines are what CI reads).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import {
  applyEvent,
  Backoff,
  disconnected,
  emptyState,
  EventStreamParser,
  formatDuration,
  formatSize,
  IRunner,
  IServerState,
  keepAliveChoice,
  parseKeepAlive,
  rowFor,
  rows,
  summary,
  unknownModels,
  withPulls
} from '../state';

const NOW = Date.parse('2026-11-28T03:00:00Z');

function runner(over: Partial<IRunner> = {}): IRunner {
  return {
    name: 'tiny:test',
    state: 'ready',
    in_flight: 0,
    queued: 0,
    num_parallel: 4,
    size: 76_000_000,
    context_length: 4096,
    expires_at: '2026-11-28T03:04:59Z',
    keep_alive: 300,
    load_progress: 1,
    tokens_per_second: 703.4,
    pid: 17817,
    port: 35549,
    ...over
  };
}

function connected(installed: string[], models: IRunner[] = []): IServerState {
  return applyEvent(
    { ...emptyState(), installed },
    { event: 'state', models, waiting: [] }
  );
}

describe('rows', () => {
  test('a remote model: state remote, its upstream, no runner controls', () => {
    const host = 'http://gpu-box:11434';
    const idle = rowFor('far', { remote: host }, NOW);
    assert.equal(idle.state, 'remote');
    assert.equal(idle.badge, 'remote');
    assert.equal(idle.runner, `→ ${host}`);
    assert.equal(idle.canWarm, false);
    assert.equal(idle.canUnload, false);
    assert.equal(idle.remote, true);
    const busy = rowFor(
      'far',
      {
        runner: runner({
          state: 'remote',
          in_flight: 2,
          num_parallel: 4,
          queued: 1,
          pid: null,
          port: null,
          remote_host: host
        })
      },
      NOW
    );
    assert.equal(busy.badge, 'remote 2/4 · queued 1');
    assert.equal(busy.countdown, '');
    assert.equal(busy.canUnload, false);
    const state: IServerState = {
      ...emptyState(),
      connected: true,
      problem: '',
      installed: ['far'],
      remotes: new Map([['far', host]])
    };
    assert.equal(rows(state, NOW)[0].state, 'remote');
  });

  test('a ready runner shows the panel widget truth', () => {
    const row = rowFor('tiny:test', { runner: runner() }, NOW);
    assert.equal(row.badge, 'ready');
    assert.equal(row.runner, 'pid 17817 · :35549');
    assert.equal(row.memory, '76 MB');
    assert.equal(row.context, '4096');
    assert.equal(row.countdown, 'unloads in 4m59s');
    assert.equal(row.speed, '703 tok/s');
    assert.equal(row.canWarm, false);
    assert.equal(row.canUnload, true);
  });

  test('busy n/N, queued, and the keep-alive timer waiting for idle', () => {
    const row = rowFor(
      'g',
      {
        runner: runner({
          state: 'busy',
          in_flight: 2,
          queued: 1,
          tokens_per_second: 11.34
        })
      },
      NOW
    );
    assert.equal(row.badge, 'busy 2/4 · queued 1');
    assert.equal(row.countdown, '5m after idle');
    assert.equal(row.speed, '11.3 tok/s');
  });

  test('loading shows its progress; queued without a runner; unloaded', () => {
    const loading = rowFor(
      'g',
      { runner: runner({ state: 'loading', load_progress: 0.4 }) },
      NOW
    );
    assert.equal(loading.badge, 'loading 40%');
    assert.equal(loading.canWarm, false);
    assert.equal(rowFor('g', { waiting: 3 }, NOW).badge, 'queued 3');
    const unloaded = rowFor('g', {}, NOW);
    assert.equal(unloaded.badge, 'unloaded');
    assert.equal(unloaded.countdown, '');
    assert.equal(unloaded.canWarm, true);
    assert.equal(unloaded.canUnload, false);
  });

  test('forever, expiring and a passed expiry', () => {
    assert.equal(
      rowFor('g', { runner: runner({ keep_alive: -1 }) }, NOW).countdown,
      'forever'
    );
    assert.equal(
      rowFor('g', { runner: runner({ state: 'expiring' }) }, NOW).countdown,
      'unloading…'
    );
    assert.equal(
      rowFor(
        'g',
        { runner: runner({ expires_at: '2026-11-28T02:59:00Z' }) },
        NOW
      ).countdown,
      'unloading…'
    );
    assert.equal(
      rowFor('g', { runner: runner({ keep_alive: -1 }) }, NOW).canUnload,
      true
    );
  });

  test('before the first event the status bar says it is connecting', () => {
    assert.equal(summary(emptyState()), 'hana: connecting…');
  });

  test('disconnected: every row unknown and no button works', () => {
    const state = disconnected(
      connected(['a'], [runner({ name: 'a' })]),
      'gone'
    );
    const [row] = rows(state, NOW);
    assert.equal(row.state, 'unknown');
    assert.equal(row.canWarm || row.canUnload, false);
    assert.equal(summary(state), 'hana: offline');
  });

  test('loaded first, each group in /api/tags order', () => {
    const state = connected(
      ['a', 'b', 'c'],
      [runner({ name: 'c' }), runner({ name: 'b' })]
    );
    assert.deepEqual(
      rows(state, NOW).map(r => r.model),
      ['b', 'c', 'a']
    );
  });
});

describe('events', () => {
  test('state snapshots replace runners; the status bar counts them', () => {
    let state = connected(['a', 'b']);
    assert.equal(summary(state), 'hana: 0 loaded · 0 busy');
    state = applyEvent(state, {
      event: 'state',
      models: [
        runner({ name: 'a', state: 'busy', in_flight: 1 }),
        runner({ name: 'b' })
      ],
      waiting: [{ name: 'c', queued: 2 }]
    });
    assert.equal(summary(state), 'hana: 2 loaded · 1 busy · 2 queued');
    assert.deepEqual(unknownModels(state), ['c']);
    state = applyEvent(state, { event: 'state', models: [], waiting: [] });
    assert.equal(summary(state), 'hana: 0 loaded · 0 busy');
  });

  test('a load failure stays on the row until the next load starts', () => {
    let state = connected(['a']);
    state = applyEvent(state, {
      event: 'load_failed',
      model: 'a',
      error: 'bad GGUF'
    });
    assert.equal(rows(state, NOW)[0].error, 'load failed: bad GGUF');
    state = applyEvent(state, { event: 'state', models: [], waiting: [] });
    assert.equal(rows(state, NOW)[0].error, 'load failed: bad GGUF');
    state = applyEvent(state, {
      event: 'state',
      models: [runner({ name: 'a', state: 'loading' })]
    });
    assert.equal(rows(state, NOW)[0].error, '');
  });

  test('a crash names the runner', () => {
    const state = applyEvent(connected(['a']), {
      event: 'crashed',
      model: 'a',
      pid: 42
    });
    assert.equal(rows(state, NOW)[0].error, 'runner crashed (pid 42)');
  });

  test('the first event after a disconnect makes it connected again', () => {
    const state = applyEvent(disconnected(connected([]), 'x'), {
      event: 'state'
    });
    assert.equal(state.connected, true);
    assert.equal(state.runners.size, 0);
  });
});

describe('pulls', () => {
  test('a pull shows its progress on a row of its own until it ends', () => {
    let state = withPulls(connected(['a']), [
      { model: 'new:1b', completed: 25, total: 100 }
    ]);
    let row = rows(state, NOW).find(r => r.model === 'new:1b');
    assert.equal(row?.badge, 'pulling 25%');
    assert.equal(row?.canWarm || row?.canUnload, false);
    assert.equal(summary(state), 'hana: 0 loaded · 0 busy · 1 pulling');
    state = applyEvent(state, {
      event: 'pull',
      model: 'new:1b',
      status: 'pulling',
      completed: 999,
      total: 1000
    });
    row = rows(state, NOW).find(r => r.model === 'new:1b');
    assert.equal(row?.badge, 'pulling 99%');
    state = applyEvent(state, {
      event: 'pull',
      model: 'new:1b',
      status: 'success'
    });
    assert.deepEqual(
      rows(state, NOW).map(r => r.model),
      ['a']
    );
    assert.equal(summary(state), 'hana: 0 loaded · 0 busy');
  });

  test('a failed pull says why on the row', () => {
    const state = applyEvent(connected(['a']), {
      event: 'pull',
      model: 'a',
      status: 'error',
      error: 'digest mismatch'
    });
    assert.equal(rows(state, NOW)[0].error, 'pull failed: digest mismatch');
    assert.equal(rows(state, NOW)[0].badge, 'unloaded');
  });
});

describe('event stream parser', () => {
  test('events split across chunks, comments, CRLF', () => {
    const parser = new EventStreamParser();
    assert.deepEqual(parser.feed(': keep-alive\n\nevent: state\nda'), []);
    assert.deepEqual(parser.feed('ta: {"event": "state", "seq": 1}\n'), []);
    assert.deepEqual(parser.feed('\nevent: x\r\ndata: {"seq":2}\r'), [
      { event: 'state', seq: 1 }
    ]);
    assert.deepEqual(parser.feed('\n\r\n'), [{ seq: 2 }]);
  });
});

describe('formats and keep-alive', () => {
  test('sizes and durations as the kernel panel writes them', () => {
    assert.equal(formatSize(622_000_000), '622 MB');
    assert.equal(formatSize(1_234_000_000), '1.2 GB');
    assert.equal(formatDuration(299.4), '4m59s');
    assert.equal(formatDuration(5400), '1h30m');
    assert.equal(formatDuration(0), '0s');
  });

  test('Go durations and seconds; bad input names Go’s error', () => {
    assert.deepEqual(parseKeepAlive('2h'), { value: '2h', seconds: 7200 });
    assert.deepEqual(parseKeepAlive('1h30m'), {
      value: '1h30m',
      seconds: 5400
    });
    assert.deepEqual(parseKeepAlive('90'), { value: 90, seconds: 90 });
    assert.deepEqual(parseKeepAlive('-1'), { value: -1, seconds: -1 });
    assert.deepEqual(parseKeepAlive('-1m'), { value: '-1m', seconds: -1 });
    assert.throws(() => parseKeepAlive('soon'), /invalid duration "soon"/);
    assert.throws(() => parseKeepAlive('5x'), /invalid duration/);
    assert.throws(() => parseKeepAlive(''), /invalid duration/);
  });

  test('the chooser follows the server value', () => {
    assert.deepEqual(keepAliveChoice(1800), { value: '30m', custom: '' });
    assert.deepEqual(keepAliveChoice(-1), { value: '-1', custom: '' });
    assert.deepEqual(keepAliveChoice(7200), { value: 'custom', custom: '2h' });
    assert.deepEqual(keepAliveChoice(null), { value: '5m', custom: '' });
  });

  test('reconnect delays double up to the cap and reset', () => {
    const backoff = new Backoff(500, 3000);
    assert.deepEqual(
      [backoff.next(), backoff.next(), backoff.next(), backoff.next()],
      [500, 1000, 2000, 3000]
    );
    backoff.reset();
    assert.equal(backoff.next(), 500);
  });
});
