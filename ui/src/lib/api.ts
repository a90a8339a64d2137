// Every GraphQL operation the UIs use, in one place (names from SPEC §9 / issue 5).
import { gql } from "./graphql";
import type { SpaceTotals } from "./format";
import type { Asset, Job, Preset } from "./types";

/** A GraphQL literal for a JS value (JSON strings are valid GraphQL strings). */
export function lit(value: string | number | boolean): string {
  if (typeof value === "number" && !Number.isFinite(value)) throw new Error("not a number");
  return JSON.stringify(value);
}

const ASSET_FIELDS = `id path filename kind status size duration container videoCodec audioCodec
  width height fps comments error url thumbnailUrl autoStatus autoReason`;
const JOB_FIELDS = `id status progress speed eta error trimStart trimEnd chunked chunkSeconds chunkWorkers
  createdAt sourceAsset { id filename duration fps } preset { id name } output { path size url } sizeRatio`;

/** Library filters, applied by the server (search: case-insensitive, in the path or the comments). */
export interface AssetFilter {
  search?: string;
  kind?: string;
  status?: string;
}

export interface AssetPage {
  assets: Asset[];
  /** How many assets match the filter in all (the library shows "N of total"). */
  total: number;
}

/** The GraphQL variables of one library page: empty filters are left out (null = no filter). */
export function assetQueryVariables(filter: AssetFilter, limit: number, offset = 0): Record<string, string | number | null> {
  const text = (v: string | undefined) => (v && v.trim() ? v.trim() : null);
  return {
    search: text(filter.search),
    kind: text(filter.kind),
    status: text(filter.status),
    limit: Math.max(0, Math.floor(limit)),
    offset: Math.max(0, Math.floor(offset)),
  };
}

/** One page of assets matching ``filter`` (ordered by path) and the number matching in all. */
export async function listAssets(filter: AssetFilter = {}, limit = 100, offset = 0): Promise<AssetPage> {
  const data = await gql<{ assets: Asset[]; assetCount: number }>(
    `query ($search: String, $kind: String, $status: String, $limit: Int, $offset: Int) {
      assets(search: $search, kind: $kind, status: $status, limit: $limit, offset: $offset) { ${ASSET_FIELDS} }
      assetCount(search: $search, kind: $kind, status: $status)
    }`,
    assetQueryVariables(filter, limit, offset),
  );
  return { assets: data.assets, total: data.assetCount };
}

export async function getAsset(id: string): Promise<Asset | null> {
  const data = await gql<{ asset: Asset | null }>(`query { asset(id: ${lit(id)}) { ${ASSET_FIELDS} } }`);
  return data.asset;
}

export async function listPresets(): Promise<Preset[]> {
  const data = await gql<{ presets: Preset[] }>(
    `query { presets { id name container videoCodec audioCodec description } }`,
  );
  return data.presets;
}

/** The newest jobs (the queue shows at most ``limit``). */
export async function listJobs(limit = 100): Promise<Job[]> {
  const data = await gql<{ jobs: Job[] }>(`query { jobs(limit: ${lit(Math.max(0, Math.floor(limit)))}) { ${JOB_FIELDS} } }`);
  return data.jobs;
}

export async function getJob(id: string): Promise<Job | null> {
  const data = await gql<{ job: Job | null }>(
    `query { job(id: ${lit(id)}) { ${JOB_FIELDS} chunks { index start end status worker } } }`,
  );
  return data.job;
}

/** Space saved by completed jobs (aggregate SQL on the server; bytesSaved is negative when outputs grew). */
export interface Statistics extends SpaceTotals {
  bytesSaved: number;
}

export async function getStatistics(): Promise<Statistics> {
  const data = await gql<{ statistics: Statistics }>(
    `query { statistics { completedBytesIn completedBytesOut bytesSaved completedJobsCompared } }`,
  );
  return data.statistics;
}

export interface ScanResult {
  found: number;
  registered: number;
  skipped: number;
}

export async function scanMediaFolder(): Promise<ScanResult> {
  const data = await gql<{ scanMediaFolder: ScanResult }>(
    `mutation { scanMediaFolder { found registered skipped } }`,
  );
  return data.scanMediaFolder;
}

export interface NewJob {
  sourceAssetId: string;
  presetId: string;
  trimStart?: number | null;
  trimEnd?: number | null;
  chunked?: boolean;
  chunkSeconds?: number;
  chunkWorkers?: number;
}

export async function createJob(input: NewJob): Promise<Job> {
  const parts = Object.entries(input)
    .filter(([, v]) => v !== undefined && v !== null)
    .map(([k, v]) => `${k}: ${lit(v as string | number | boolean)}`);
  const data = await gql<{ createJob: Job }>(
    `mutation { createJob(input: { ${parts.join(", ")} }) { ${JOB_FIELDS} } }`,
  );
  return data.createJob;
}

export async function cancelJob(id: string): Promise<Job> {
  const data = await gql<{ cancelJob: Job }>(`mutation { cancelJob(id: ${lit(id)}) { ${JOB_FIELDS} } }`);
  return data.cancelJob;
}

export async function retryJob(id: string): Promise<Job> {
  const data = await gql<{ retryJob: Job }>(`mutation { retryJob(id: ${lit(id)}) { ${JOB_FIELDS} } }`);
  return data.retryJob;
}

/** Delete a finished job; ``deleteOutput`` also removes its output file from MEDIA_OUT. */
export async function deleteJob(id: string, deleteOutput: boolean): Promise<boolean> {
  const data = await gql<{ deleteJob: { ok: boolean } }>(
    `mutation { deleteJob(id: ${lit(id)}, deleteOutput: ${lit(deleteOutput)}) { ok } }`,
  );
  return data.deleteJob.ok;
}

export async function updateAsset(id: string, comments: string): Promise<Asset> {
  const data = await gql<{ updateAsset: Asset }>(
    `mutation { updateAsset(id: ${lit(id)}, input: { comments: ${lit(comments)} }) { ${ASSET_FIELDS} } }`,
  );
  return data.updateAsset;
}

export async function deleteAsset(id: string): Promise<boolean> {
  const data = await gql<{ deleteAsset: { ok: boolean } }>(`mutation { deleteAsset(id: ${lit(id)}) { ok } }`);
  return data.deleteAsset.ok;
}

/** URL of the source media, for <video>/<audio>: the API's (Range support; signed when the server has a token). */
export function mediaUrl(asset: Asset): string {
  return asset.url;
}

/** The API's thumbnail URL (signed for its path when the server has a token) at ``t`` seconds, ``w`` wide. */
export function thumbnailUrl(asset: Asset, t: number, w: number): string {
  const [path, query = ""] = asset.thumbnailUrl.split("?", 2);
  const params = new URLSearchParams(query);
  params.set("t", t.toFixed(3));
  params.set("w", String(w));
  return `${path}?${params.toString()}`;
}

/** The preset a form starts with: an H.264 one if there is one, else the first that encodes video. */
export function defaultPreset(presets: Preset[]): Preset | undefined {
  return (
    presets.find((p) => p.name === "h264-720p") ??
    presets.find((p) => p.name.startsWith("h264")) ??
    presets.find((p) => p.videoCodec && p.videoCodec !== "copy") ??
    presets[0]
  );
}
