// Live job events over gRPC-Web (protobuf-ts, code generated from proto/mpr/v1/events.proto).
// A stream that drops is reopened with after_sequence = the last sequence seen, so no event is
// lost; anything at or below that sequence is dropped, so none is duplicated.
import { GrpcWebFetchTransport } from "@protobuf-ts/grpcweb-transport";
import { RpcError, type RpcOptions, type ServerStreamingCall } from "@protobuf-ts/runtime-rpc";
import { ChunkerServiceClient } from "../gen/mpr/v1/events.client";
import type { PipelineEvent } from "../gen/mpr/v1/events";
import { authHeaders, reportAuthNeeded } from "./settings";

export type { PipelineEvent };

export function eventsClient(): ChunkerServiceClient {
  return new ChunkerServiceClient(new GrpcWebFetchTransport({ baseUrl: "/grpc", format: "binary" }));
}

export function rpcOptions(signal: AbortSignal): RpcOptions {
  return { abort: signal, meta: authHeaders() };
}

/** "unauthenticated": refused for want of a valid API token; not retried (the page restarts it once a token is saved). */
export type StreamState = "connecting" | "live" | "reconnecting" | "ended" | "closed" | "unauthenticated";

export interface StreamStats {
  state: StreamState;
  reconnects: number;
  received: number;
  duplicates: number;
  gaps: number;
  lastSequence: number;
  error: string;
}

export interface ResumableOptions {
  /** after_sequence for the first call (0 = from the start / only new events). */
  after: number;
  /** Open the stream, resuming after `after`. */
  open(after: number, options: RpcOptions): ServerStreamingCall<object, PipelineEvent>;
  onEvent(event: PipelineEvent, sequence: number): void;
  onStats?(stats: StreamStats): void;
  /** Called each time a reopened stream delivers its first event or completes (e.g. to refetch lists). */
  onReconnected?(): void;
  /** True when the stream is complete after this event (a final status on StreamChunkPipeline). */
  isLast?(event: PipelineEvent): boolean;
  /** Count sequence jumps as gaps (the per-job stream is numbered 1, 2, 3, ...). */
  contiguous?: boolean;
  /** Milliseconds before the first reopen; doubles per failed attempt up to 5 s (default 300). */
  retryDelay?: number;
}

/** A grpc-message as sent: percent-encoded (gRPC spec); the transport leaves it encoded. */
export function decodeGrpcMessage(message: string): string {
  try {
    return decodeURIComponent(message);
  } catch {
    return message; // not percent-encoded after all (a bare "%")
  }
}

/** True when the server refused the call for the token (grpc-status 16/7, or HTTP 401/403 mapped to them). */
export function isAuthRefusal(err: unknown): boolean {
  return err instanceof RpcError && (err.code === "UNAUTHENTICATED" || err.code === "PERMISSION_DENIED");
}

export function describe(err: unknown): string {
  if (err instanceof RpcError) {
    if (isAuthRefusal(err)) {
      return "Not authorised for live events: set the API token in Settings.";
    }
    return `${err.code}: ${decodeGrpcMessage(err.message)}`;
  }
  if (err instanceof Error) return err.message;
  return String(err);
}

/** Follow a server stream for as long as it is wanted; returns a function that stops it. */
export function followStream(options: ResumableOptions): () => void {
  const stats: StreamStats = {
    state: "connecting",
    reconnects: 0,
    received: 0,
    duplicates: 0,
    gaps: 0,
    lastSequence: options.after,
    error: "",
  };
  const stop = new AbortController();
  const publish = (patch: Partial<StreamStats>) => {
    Object.assign(stats, patch);
    options.onStats?.({ ...stats });
  };

  const run = async () => {
    const firstDelay = options.retryDelay ?? 300;
    let delay = firstDelay;
    let done = false;
    let refused = false;
    while (!stop.signal.aborted && !done) {
      const attempt = new AbortController();
      const onStop = () => attempt.abort();
      stop.signal.addEventListener("abort", onStop);
      let delivered = false;
      const rpc = rpcOptions(attempt.signal);
      try {
        const call = options.open(stats.lastSequence, rpc);
        publish({ state: stats.reconnects ? "reconnecting" : "connecting" });
        // Response headers arrive as soon as the server accepts the stream, before any event.
        const connected = () => {
          if (delivered) return;
          delivered = true;
          delay = firstDelay;
          publish({ state: "live", error: "" });
          if (stats.reconnects) options.onReconnected?.();
        };
        call.headers.then(connected, () => undefined);
        for await (const event of call.responses) {
          connected();
          const seq = Number(event.sequence);
          if (seq <= stats.lastSequence) {
            stats.duplicates += 1;
            continue;
          }
          if (options.contiguous && seq !== stats.lastSequence + 1) stats.gaps += 1;
          stats.lastSequence = seq;
          stats.received += 1;
          options.onEvent(event, seq);
          publish({});
          if (options.isLast?.(event)) done = true;
        }
        await call.status;
        if (options.isLast && !done) {
          // The server closed the stream before the job's final event: resume.
          throw new Error("stream closed before the job finished");
        }
        if (!options.isLast) throw new Error("stream closed by the server");
      } catch (err) {
        if (stop.signal.aborted) break;
        if (done) break;
        if (isAuthRefusal(err)) {
          // retrying cannot help without a (new) token: say so, and stop
          refused = true;
          publish({ state: "unauthenticated", error: describe(err) });
          // the token prompt, unless a new token was saved meanwhile (the page restarts the stream with it)
          if (rpc.meta?.Authorization === authHeaders().Authorization) reportAuthNeeded();
          break;
        }
        stats.reconnects += 1;
        publish({ state: "reconnecting", error: describe(err) });
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, Math.max(firstDelay, 5000));
      } finally {
        stop.signal.removeEventListener("abort", onStop);
      }
    }
    if (!refused) publish({ state: stop.signal.aborted ? "closed" : "ended" });
  };
  void run();
  return () => stop.abort();
}
