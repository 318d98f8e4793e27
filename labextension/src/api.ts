/**
 * Requests to hana's authenticated routes on the Jupyter server (`{base_url}hana/...`).
 *
 * Everything goes through `ServerConnection.makeRequest`, which adds the token and XSRF headers
 * from the page's server settings, so the sidebar uses Jupyter's own auth and never the shared
 * port. The event stream is read from the fetch body (an `EventSource` could not send the token
 * header).
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import { EventStreamParser, IServerEvent } from './state';

/** The server closes a silent stream's socket late; hana sends a comment every 15 s. */
export const EVENTS_READ_TIMEOUT_MS = 45000;

/** An answer from hana that is not a success, with the server's own message. */
export class HanaRequestError extends Error {}

export function hanaUrl(
  settings: ServerConnection.ISettings,
  path: string
): string {
  return URLExt.join(settings.baseUrl, 'hana', path);
}

/** JSON from `{base_url}hana/<path>`; throws `HanaRequestError` with the server's `error`. */
export async function requestJSON<T>(
  settings: ServerConnection.ISettings,
  path: string,
  init: RequestInit = {}
): Promise<T> {
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(
      hanaUrl(settings, path),
      init,
      settings
    );
  } catch (error) {
    throw new HanaRequestError(`server unreachable: ${String(error)}`);
  }
  const text = await response.text();
  let data: any = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const message =
      data && typeof data.error === 'string'
        ? data.error
        : `HTTP ${response.status} ${response.statusText}`;
    throw new HanaRequestError(message);
  }
  return data as T;
}

/**
 * Read `GET {base_url}hana/api/hana/events` until it ends, calling `onEvent` for each event.
 * Resolves when the server closes the stream; rejects on an error, on `signal`, and when
 * nothing (not even the 15 s heartbeat) arrived for `EVENTS_READ_TIMEOUT_MS`.
 */
export async function followEvents(
  settings: ServerConnection.ISettings,
  onEvent: (event: IServerEvent) => void,
  signal: AbortSignal
): Promise<void> {
  const abort = new AbortController();
  const stop = () => abort.abort();
  signal.addEventListener('abort', stop);
  let timer = 0;
  const arm = () => {
    window.clearTimeout(timer);
    timer = window.setTimeout(stop, EVENTS_READ_TIMEOUT_MS);
  };
  try {
    arm();
    const response = await ServerConnection.makeRequest(
      hanaUrl(settings, 'api/hana/events'),
      { method: 'GET', signal: abort.signal, cache: 'no-store' },
      settings
    );
    if (!response.ok || !response.body) {
      throw new HanaRequestError(
        `GET hana/api/hana/events answered ${response.status}`
      );
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    const parser = new EventStreamParser();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) {
        return;
      }
      arm();
      for (const event of parser.feed(
        decoder.decode(value, { stream: true })
      )) {
        onEvent(event);
      }
    }
  } finally {
    window.clearTimeout(timer);
    signal.removeEventListener('abort', stop);
    abort.abort(); // releases the connection if we leave early
  }
}
