// followStream against a real gRPC-Web server (node:http speaking the gRPC-Web wire format, with
// the generated protobuf code) through the real GrpcWebFetchTransport: reconnects, resumption
// with after_sequence, duplicates, gaps, errors and stopping.
import { createServer, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { GrpcWebFetchTransport } from "@protobuf-ts/grpcweb-transport";
import { RpcError } from "@protobuf-ts/runtime-rpc";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ChunkerServiceClient } from "../gen/mpr/v1/events.client";
import { PipelineEvent, StreamJobsRequest, StreamRequest } from "../gen/mpr/v1/events";
import { onAuthNeeded, setToken } from "./settings";
import { decodeGrpcMessage, describe as describeError, followStream, type ResumableOptions, type StreamStats } from "./stream";

/** How one call ends: trailers with OK, a cut connection, an error status, or never (open). */
type Ending = "ok" | "drop" | "open" | { code: number; message: string; headersOnly?: boolean };

interface Step {
  events: number[]; // sequence numbers to send
  end: Ending;
}

interface Seen {
  method: string;
  after: number;
  authorization: string | undefined;
}

function frame(flag: number, payload: Uint8Array): Buffer {
  const head = Buffer.alloc(5);
  head[0] = flag;
  head.writeUInt32BE(payload.length, 1);
  return Buffer.concat([head, payload]);
}

/** grpc-message encoding as mpr/grpc/web.py does it: printable ASCII except % stays as it is. */
function encodeMessage(message: string): string {
  return [...message]
    .map((ch) => (ch >= " " && ch <= "~" && ch !== "%" ? ch : [...Buffer.from(ch)].map((b) => `%${b.toString(16).toUpperCase().padStart(2, "0")}`).join("")))
    .join("");
}

function trailers(code: number, message = ""): Buffer {
  return frame(0x80, Buffer.from(`grpc-status:${code}\r\ngrpc-message:${encodeMessage(message)}\r\n`));
}

function event(seq: number): PipelineEvent {
  const final = seq >= FINAL_SEQ;
  return PipelineEvent.create({
    jobId: "job-1",
    sequence: String(seq),
    timestamp: 1_750_000_000 + seq,
    type: final ? "status" : "progress",
    status: final ? "completed" : "processing",
    chunkIndex: -1,
    progress: final ? 100 : seq,
  });
}
const FINAL_SEQ = 100;

/** A gRPC-Web server that answers the n-th call with script[n] (calls past the script stay open). */
class GrpcWebServer {
  readonly seen: Seen[] = [];
  private server: Server;
  private open = new Set<ServerResponse>();
  readonly closed: Promise<void>[] = [];
  url = "";

  constructor(private script: Step[]) {
    this.server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => this.answer(req.url ?? "", req.headers.authorization, Buffer.concat(chunks), res));
    });
  }

  async start(): Promise<string> {
    await new Promise<void>((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/grpc`;
    return this.url;
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private answer(path: string, authorization: string | undefined, body: Buffer, res: ServerResponse) {
    const method = path.split("/").pop() ?? "";
    const message = body.subarray(5, 5 + body.readUInt32BE(1));
    const after =
      method === "StreamJobs" ? StreamJobsRequest.fromBinary(message).afterSequence : StreamRequest.fromBinary(message).afterSequence;
    const step = this.script[this.seen.length] ?? { events: [], end: "open" };
    this.seen.push({ method, after: Number(after), authorization });
    const end = step.end;
    if (typeof end === "object" && end.headersOnly) {
      res.writeHead(200, {
        "content-type": "application/grpc-web+proto",
        "grpc-status": String(end.code),
        "grpc-message": encodeMessage(end.message),
      });
      res.end();
      return;
    }
    res.writeHead(200, { "content-type": "application/grpc-web+proto" });
    for (const seq of step.events) res.write(frame(0, PipelineEvent.toBinary(event(seq))));
    if (end === "ok") res.end(trailers(0));
    else if (typeof end === "object") res.end(trailers(end.code, end.message));
    else if (end === "drop") res.write(Buffer.alloc(0), () => setTimeout(() => res.socket?.destroy(), 20));
    else {
      this.open.add(res);
      this.closed.push(new Promise((resolve) => res.on("close", () => resolve())));
    }
  }
}

interface Run {
  events: number[];
  stats: StreamStats[];
  reconnected: number;
  stop: () => void;
  /** Resolves with the last stats once the stream is ended or closed. */
  finished: Promise<StreamStats>;
  /** Resolves once `n` events were delivered. */
  received(n: number): Promise<void>;
}

function follow(url: string, options: Partial<ResumableOptions> & { jobs?: boolean } = {}): Run {
  const client = new ChunkerServiceClient(new GrpcWebFetchTransport({ baseUrl: url, format: "binary" }));
  const run = { events: [] as number[], stats: [] as StreamStats[], reconnected: 0 } as Run;
  const waiters: (() => void)[] = [];
  let finish: (s: StreamStats) => void;
  run.finished = new Promise((resolve) => (finish = resolve));
  run.received = (n) =>
    new Promise((resolve) => {
      const check = () => (run.events.length >= n ? resolve() : waiters.push(check));
      check();
    });
  run.stop = followStream({
    after: 0,
    retryDelay: 5,
    open: options.jobs
      ? (after, rpc) => client.streamJobs({ afterSequence: String(after) }, rpc)
      : (after, rpc) => client.streamChunkPipeline({ jobId: "job-1", afterSequence: String(after) }, rpc),
    isLast: options.jobs ? undefined : (ev) => ev.type === "status" && ev.status === "completed",
    onEvent: (ev, seq) => {
      expect(Number(ev.sequence)).toBe(seq);
      run.events.push(seq);
      waiters.splice(0).forEach((w) => w());
    },
    onStats: (s) => {
      run.stats.push(s);
      if (s.state === "ended" || s.state === "closed") finish(s);
    },
    onReconnected: () => (run.reconnected += 1),
    ...options,
  });
  return run;
}

let server: GrpcWebServer | null = null;
async function serve(script: Step[]): Promise<GrpcWebServer> {
  server = new GrpcWebServer(script);
  await server.start();
  return server;
}

afterEach(async () => {
  await server?.stop();
  server = null;
});

describe("followStream over gRPC-Web", () => {
  it("delivers a job's events in order and ends after the final one", async () => {
    const s = await serve([{ events: [1, 2, 3, FINAL_SEQ], end: "ok" }]);
    const run = follow(s.url);
    const last = await run.finished;
    expect(run.events).toEqual([1, 2, 3, FINAL_SEQ]);
    expect(last).toMatchObject({ state: "ended", received: 4, lastSequence: FINAL_SEQ, reconnects: 0, duplicates: 0, error: "" });
    expect(run.stats.map((x) => x.state)).toContain("live");
    expect(s.seen).toEqual([{ method: "StreamChunkPipeline", after: 0, authorization: undefined }]);
  });

  it("resumes a dropped stream after the last sequence seen and drops what is replayed", async () => {
    const s = await serve([
      { events: [1, 2, 3], end: "drop" },
      // a server that replays from a little earlier: 2 and 3 must not be delivered twice
      { events: [2, 3, 4, 5], end: "drop" },
      { events: [6, FINAL_SEQ], end: "ok" },
    ]);
    const run = follow(s.url, { contiguous: false });
    const last = await run.finished;
    expect(run.events).toEqual([1, 2, 3, 4, 5, 6, FINAL_SEQ]);
    expect(s.seen.map((x) => x.after)).toEqual([0, 3, 5]);
    expect(last).toMatchObject({ state: "ended", reconnects: 2, duplicates: 2, received: 7, lastSequence: FINAL_SEQ });
    expect(run.reconnected).toBe(2);
    expect(run.stats.some((x) => x.state === "reconnecting" && x.error !== "")).toBe(true);
  });

  it("starts from the given sequence", async () => {
    const s = await serve([{ events: [41, 42, FINAL_SEQ], end: "ok" }]);
    const run = follow(s.url, { after: 40 });
    await run.finished;
    expect(s.seen[0].after).toBe(40);
    expect(run.events).toEqual([41, 42, FINAL_SEQ]);
  });

  it("counts a jump in a contiguous stream as a gap, but still delivers what came", async () => {
    const s = await serve([{ events: [1, 2, 5, 6, FINAL_SEQ], end: "ok" }]);
    const run = follow(s.url, { contiguous: true });
    const last = await run.finished;
    expect(run.events).toEqual([1, 2, 5, 6, FINAL_SEQ]);
    expect(last.gaps).toBe(2); // 2 -> 5 and 6 -> FINAL_SEQ
  });

  it("reopens a job stream the server closed before the job's final event", async () => {
    const s = await serve([
      { events: [1, 2], end: "ok" },
      { events: [3, FINAL_SEQ], end: "ok" },
    ]);
    const run = follow(s.url);
    const last = await run.finished;
    expect(run.events).toEqual([1, 2, 3, FINAL_SEQ]);
    expect(s.seen.map((x) => x.after)).toEqual([0, 2]);
    expect(last.reconnects).toBe(1);
    expect(run.stats.map((x) => x.error)).toContain("stream closed before the job finished");
  });

  it("keeps the all-jobs stream open: a closed stream is resumed, an error status retried", async () => {
    const s = await serve([
      { events: [7, 8], end: "ok" },
      { events: [9], end: { code: 14, message: "restarting: 50% drained, café\nclosed" } },
      { events: [10], end: "open" },
    ]);
    const run = follow(s.url, { jobs: true });
    await run.received(4);
    expect(run.events).toEqual([7, 8, 9, 10]);
    expect(s.seen.map((x) => [x.method, x.after])).toEqual([
      ["StreamJobs", 0],
      ["StreamJobs", 8],
      ["StreamJobs", 9],
    ]);
    const errors = run.stats.map((x) => x.error).filter(Boolean);
    expect(errors).toContain("stream closed by the server");
    // grpc-message comes percent-encoded; the user reads it decoded
    expect(errors).toContain("UNAVAILABLE: restarting: 50% drained, café\nclosed");
    run.stop();
    const last = await run.finished;
    expect(last).toMatchObject({ state: "closed", reconnects: 2 });
  });

  it("says to set the token when the server refuses the stream, and stops retrying until restarted", async () => {
    let announced = 0;
    const unlisten = onAuthNeeded(() => announced++);
    try {
      for (const headersOnly of [true, false]) {
        // grpc-status 16 in the headers (trailers-only) or in the trailers: the transport's RpcError code UNAUTHENTICATED
        const refuse = { events: [], end: { code: 16, message: "missing token", headersOnly } } as Step;
        const s = await serve([refuse, { events: [1, FINAL_SEQ], end: "ok" }]);
        const stats: StreamStats[] = [];
        const refused = new Promise<StreamStats>((resolve) =>
          follow(s.url, { onStats: (x) => (stats.push(x), x.state === "unauthenticated" && resolve(x)) }),
        );
        const last = await refused;
        expect(last).toMatchObject({
          state: "unauthenticated",
          reconnects: 0,
          error: "Not authorised for live events: set the API token in Settings.",
        });
        expect(stats.map((x) => x.state)).not.toContain("reconnecting");
        expect(s.seen).toHaveLength(1);
        // the page restarts the stream once a token is saved: that one is served
        const again = follow(s.url);
        expect((await again.finished).state).toBe("ended");
        expect(again.events).toEqual([1, FINAL_SEQ]);
        expect(s.seen).toHaveLength(2); // the refused follow never called again
        expect(stats.at(-1)?.state).toBe("unauthenticated"); // nor reported anything after
        await s.stop();
        server = null;
      }
      expect(announced).toBe(2); // the token prompt is shown
    } finally {
      unlisten();
    }
  });

  it("stops: the open call is aborted and nothing is delivered afterwards", async () => {
    const s = await serve([{ events: [1, 2], end: "open" }]);
    const run = follow(s.url);
    await run.received(2);
    run.stop();
    const last = await run.finished;
    expect(last.state).toBe("closed");
    await s.closed[0]; // the server saw the connection go
    expect(run.events).toEqual([1, 2]);
    expect(s.seen).toHaveLength(1); // and it did not reconnect
  });
});

describe("followStream with an API token", () => {
  const store = new Map<string, string>();
  beforeEach(() => {
    // the browser's localStorage, which Node does not have
    Object.assign(globalThis, {
      localStorage: {
        getItem: (k: string) => store.get(k) ?? null,
        setItem: (k: string, v: string) => void store.set(k, v),
        removeItem: (k: string) => void store.delete(k),
      },
    });
  });
  afterEach(() => {
    delete (globalThis as { localStorage?: unknown }).localStorage;
  });

  it("sends the stored token as a bearer token on every call, including reconnects", async () => {
    setToken("s3cret");
    const s = await serve([
      { events: [1], end: "drop" },
      { events: [FINAL_SEQ], end: "ok" },
    ]);
    await follow(s.url).finished;
    expect(s.seen.map((x) => x.authorization)).toEqual(["Bearer s3cret", "Bearer s3cret"]);
    setToken("");
    expect(store.size).toBe(0);
  });
});

describe("stream error messages", () => {
  it("decode a percent-encoded grpc-message, and leave one that is not encoded alone", () => {
    expect(decodeGrpcMessage("job%20not%20found")).toBe("job not found");
    expect(decodeGrpcMessage("caf%C3%A9 100%25")).toBe("café 100%");
    expect(decodeGrpcMessage("50% done")).toBe("50% done"); // a bare % is not an escape
    expect(decodeGrpcMessage("")).toBe("");
  });

  it("name the gRPC code, and say what to do when the token is missing or wrong", () => {
    expect(describeError(new RpcError("job%20gone", "NOT_FOUND"))).toBe("NOT_FOUND: job gone");
    expect(describeError(new RpcError("bad token", "UNAUTHENTICATED"))).toBe(
      "Not authorised for live events: set the API token in Settings.",
    );
    expect(describeError(new RpcError("", "PERMISSION_DENIED"))).toBe("Not authorised for live events: set the API token in Settings.");
    expect(describeError(new TypeError("fetch failed"))).toBe("fetch failed");
    expect(describeError("cut")).toBe("cut");
  });
});
