import { useCallback, useEffect, useRef, useState } from "react";
import { AuthPrompt, Empty, ErrorBanner, Header, useAuthNeeded, useTokenVersion } from "../components/common";
import {
  getAsset,
  getJob,
  getStatistics,
  listAssets,
  listJobs,
  listPresets,
  type AssetFilter,
  type Statistics,
} from "../lib/api";
import { errorMessage, isAuthError } from "../lib/graphql";
import { POLL_MS, mergeJobs, needsPolling } from "../lib/jobs";
import { appendPage, pageSizeFrom } from "../lib/paging";
import { eventsClient, followStream } from "../lib/stream";
import type { Asset, Job, Preset } from "../lib/types";
import { AssetDetail } from "./AssetDetail";
import { JobQueue } from "./JobQueue";
import { withoutJob } from "./jobActions";
import { Library } from "./Library";

/** How often the library's first page is re-read, for files the watch folder found meanwhile. */
const LIBRARY_REFRESH_MS = 20_000;

export function App() {
  const [pageSize] = useState(() => pageSizeFrom(location.search));
  const [filter, setFilter] = useState<AssetFilter>({});
  const [assets, setAssets] = useState<Asset[]>([]);
  const [total, setTotal] = useState(0);
  const [selected, setSelected] = useState<Asset | null>(null);
  const [presets, setPresets] = useState<Preset[]>([]);
  const [jobs, setJobs] = useState<Job[]>([]);
  const [loading, setLoading] = useState(true);
  const [error, setError] = useState("");
  const [live, setLive] = useState({ state: "connecting", error: "" });
  // A refused read (MPR_API_TOKEN set, none saved here) shows the token prompt, not an error; a saved
  // token bumps tokenVersion, and every loader below runs again with it.
  const tokenVersion = useTokenVersion();
  const locked = useAuthNeeded();
  const report = useCallback((err: unknown) => {
    if (!isAuthError(err)) setError(errorMessage(err));
  }, []);
  useEffect(() => setError(""), [tokenVersion]);

  // The library: the server filters, counts and pages; a newer request wins over an older one.
  const assetRequest = useRef(0);
  const loadAssets = useCallback(
    async (more = false) => {
      const request = ++assetRequest.current;
      setLoading(true);
      try {
        const page = await listAssets(filter, pageSize, more ? assets.length : 0);
        if (request !== assetRequest.current) return;
        setAssets((shown) => (more ? appendPage(shown, page.assets) : page.assets));
        setTotal(page.total);
        setSelected((s) => (s ? (page.assets.find((a) => a.id === s.id) ?? s) : s));
      } catch (err) {
        if (request === assetRequest.current) report(err);
      } finally {
        if (request === assetRequest.current) setLoading(false);
      }
    },
    [filter, pageSize, assets.length, report],
  );
  const firstPage = useRef(loadAssets);
  firstPage.current = loadAssets;
  useEffect(() => {
    void firstPage.current(false);
  }, [filter, pageSize, tokenVersion]);
  // Files the server's watch folder (MPR_SCAN_INTERVAL) registered, or uploads from elsewhere: re-read
  // the first page now and then while it is all that is shown (a list paged further is left alone).
  const pagedFurther = assets.length > pageSize;
  useEffect(() => {
    if (pagedFurther) return;
    const timer = setInterval(() => {
      if (!document.hidden) void firstPage.current(false);
    }, LIBRARY_REFRESH_MS);
    return () => clearInterval(timer);
  }, [pagedFurther]);

  // Jobs changed by the stream or this page, numbered, so a re-read of the list started before
  // a change does not undo it (see mergeJobs).
  const changes = useRef({ tick: 0, touched: new Map<string, number>() });
  const touch = (id: string) => changes.current.touched.set(id, ++changes.current.tick);
  const loadingJobs = useRef(false);
  const deleted = useRef(new Set<string>());
  const loadJobs = useCallback(async () => {
    if (loadingJobs.current) return;
    loadingJobs.current = true;
    const mark = changes.current.tick;
    try {
      // a re-read started before a delete must not bring the deleted job back
      const fetched = (await listJobs()).filter((j) => !deleted.current.has(j.id));
      const { touched } = changes.current;
      const recent = new Set([...touched].filter(([, tick]) => tick > mark).map(([id]) => id));
      for (const [id, tick] of touched) if (tick <= mark) touched.delete(id);
      setJobs((all) => mergeJobs(all, fetched, recent));
    } catch (err) {
      report(err);
    } finally {
      loadingJobs.current = false;
    }
  }, [report]);

  const upsertJob = useCallback((job: Job) => {
    touch(job.id);
    setJobs((all) => {
      const i = all.findIndex((j) => j.id === job.id);
      if (i < 0) return [job, ...all];
      const next = all.slice();
      next[i] = { ...all[i], ...job };
      return next;
    });
  }, []);
  const removeJob = useCallback((id: string) => {
    deleted.current.add(id);
    setJobs((all) => withoutJob(all, id));
  }, []);

  useEffect(() => {
    void loadJobs();
    listPresets().then(setPresets, report);
    const id = new URLSearchParams(location.search).get("asset");
    if (id) getAsset(id).then((a) => a && setSelected((s) => s ?? a), () => undefined);
  }, [loadJobs, report, tokenVersion]);

  // Fallback when live events cannot arrive (a job run by another process without Redis):
  // re-read the job list every POLL_MS while a job is not final, and whenever the window
  // gets the focus back.
  // Space saved (the queue's header): read again whenever the set of completed jobs changes (a job
  // completed by the stream or a re-read, or a completed job deleted); a newer read wins.
  const [stats, setStats] = useState<Statistics | null>(null);
  const statsRequest = useRef(0);
  const completedKey = jobs
    .filter((j) => j.status === "completed")
    .map((j) => j.id)
    .sort()
    .join(",");
  useEffect(() => {
    const request = ++statsRequest.current;
    getStatistics().then(
      (s) => request === statsRequest.current && setStats(s),
      () => undefined, // the line keeps its last value; the job list reports a server that is down
    );
  }, [completedKey, tokenVersion]);

  const polling = needsPolling(jobs);
  useEffect(() => {
    if (!polling) return;
    const timer = setInterval(() => {
      if (!document.hidden) void loadJobs();
    }, POLL_MS);
    return () => clearInterval(timer);
  }, [polling, loadJobs]);
  useEffect(() => {
    const onFocus = () => void loadJobs();
    const onVisible = () => document.visibilityState === "visible" && void loadJobs();
    window.addEventListener("focus", onFocus);
    document.addEventListener("visibilitychange", onVisible);
    return () => {
      window.removeEventListener("focus", onFocus);
      document.removeEventListener("visibilitychange", onVisible);
    };
  }, [loadJobs]);

  // Live updates: one StreamJobs call for all jobs. Progress events patch the row in place;
  // a status change refetches that job (error text, output URL); a reconnect refetches the list.
  const refreshing = useRef(new Set<string>());
  const jobsRef = useRef(jobs);
  jobsRef.current = jobs;
  useEffect(() => {
    const client = eventsClient();
    const refresh = (id: string) => {
      if (refreshing.current.has(id)) return;
      refreshing.current.add(id);
      getJob(id)
        .then((job) => job && upsertJob(job))
        .catch(() => undefined)
        .finally(() => refreshing.current.delete(id));
    };
    // a stopped stream (restarted with a new token) still reports "closed" later: ignore it
    let current = true;
    const stop = followStream({
      after: 0,
      open: (after, options) => client.streamJobs({ afterSequence: String(after) }, options),
      onReconnected: () => void loadJobs(),
      onStats: (s) => current && setLive({ state: s.state, error: s.error }),
      onEvent: (ev) => {
        if (ev.type === "progress" || ev.type === "status") {
          const known = jobsRef.current.some((j) => j.id === ev.jobId);
          touch(ev.jobId);
          setJobs((all) =>
            all.map((j) => {
              if (j.id !== ev.jobId) return j;
              const patch: Partial<Job> = { status: ev.status || j.status };
              if (ev.type === "progress") {
                patch.progress = ev.progress;
                patch.speed = ev.speed || j.speed;
                patch.eta = ev.eta;
              }
              return { ...j, ...patch };
            }),
          );
          if (ev.type === "status" || !known) refresh(ev.jobId);
        }
      },
    });
    return () => {
      current = false;
      stop();
    };
  }, [loadJobs, upsertJob, tokenVersion]);

  const select = (asset: Asset) => {
    setSelected(asset);
    const url = new URL(location.href);
    url.searchParams.set("asset", asset.id);
    history.replaceState(null, "", url);
  };

  return (
    <>
      <Header current="timeline" />
      <main className="timeline-layout">
        <AuthPrompt />
        <ErrorBanner error={error} onDismiss={() => setError("")} />
        <Library
          assets={assets}
          total={total}
          loading={loading}
          locked={locked}
          filtered={!!(filter.search || filter.kind || filter.status)}
          selectedId={selected?.id ?? null}
          onSelect={select}
          onFilter={setFilter}
          onLoadMore={() => loadAssets(true)}
          onScanned={() => loadAssets(false)}
          onError={setError}
        />
        {selected ? (
          <AssetDetail
            key={selected.id}
            asset={selected}
            presets={presets}
            onJobCreated={upsertJob}
            onAssetChanged={(a) => {
              setAssets((all) => all.map((x) => (x.id === a.id ? { ...x, ...a } : x)));
              setSelected((s) => (s && s.id === a.id ? { ...s, ...a } : s));
            }}
            onAssetDeleted={(id) => {
              setAssets((all) => all.filter((x) => x.id !== id));
              setTotal((n) => Math.max(0, n - 1));
              setSelected(null);
            }}
          />
        ) : (
          <section className="panel detail">
            <Empty>Select an asset in the library to play it, trim it and transcode it.</Empty>
          </section>
        )}
        <JobQueue jobs={jobs} live={live} locked={locked} stats={stats} onJobChanged={upsertJob} onJobDeleted={removeJob} />
      </main>
    </>
  );
}
