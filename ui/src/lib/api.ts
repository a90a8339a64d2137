// Every GraphQL operation the UIs use, in one place (names from SPEC §9 / issue 5).
import { gql } from "./graphql";
import type { Asset, Job, Preset } from "./types";

/** A GraphQL literal for a JS value (JSON strings are valid GraphQL strings). */
export function lit(value: string | number | boolean): string {
  if (typeof value === "number" && !Number.isFinite(value)) throw new Error("not a number");
  return JSON.stringify(value);
}

const ASSET_FIELDS = `id path filename kind status size duration container videoCodec audioCodec
  width height fps comments error`;
const JOB_FIELDS = `id status progress speed eta error trimStart trimEnd chunked chunkSeconds chunkWorkers
  createdAt sourceAsset { id filename duration fps } preset { id name } output { path size url }`;

export async function listAssets(): Promise<Asset[]> {
  const data = await gql<{ assets: Asset[] }>(`query { assets { ${ASSET_FIELDS} } }`);
  return data.assets;
}

export async function listPresets(): Promise<Preset[]> {
  const data = await gql<{ presets: Preset[] }>(
    `query { presets { id name container videoCodec audioCodec description } }`,
  );
  return data.presets;
}

export async function listJobs(): Promise<Job[]> {
  const data = await gql<{ jobs: Job[] }>(`query { jobs(limit: 100) { ${JOB_FIELDS} } }`);
  return data.jobs;
}

export async function getJob(id: string): Promise<Job | null> {
  const data = await gql<{ job: Job | null }>(
    `query { job(id: ${lit(id)}) { ${JOB_FIELDS} chunks { index start end status worker } } }`,
  );
  return data.job;
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

/** URL of the source media, for <video>/<audio> (served with Range support). */
export function mediaUrl(asset: Asset): string {
  return "/media/in/" + asset.path.split("/").map(encodeURIComponent).join("/");
}

export function thumbnailUrl(asset: Asset, t: number, w: number): string {
  return `/api/assets/${encodeURIComponent(asset.id)}/thumbnail?t=${t.toFixed(3)}&w=${w}`;
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
