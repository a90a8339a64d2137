import { useCallback, useEffect, useRef, useState } from "react";
import { Empty, ErrorBanner, Header } from "../components/common";
import { getJob, listAssets, listJobs, listPresets } from "../lib/api";
import { errorMessage } from "../lib/graphql";
import { eventsClient, followStream } from "../lib/stream";
import type { Asset, Job, Preset } from "../lib/types";
import { AssetDetail } from "./AssetDetail";
import { JobQueue } from "./JobQueue";
import { Library } from "./Library";

export function App() {
  const [assets, setAssets] = useState<Asset[]>([]);
  const [presets, setPresets] = useState<Preset[]>([]);
  const [jobs, setJobs] = useState<Job[]>([]);
  const [loading, setLoading] = useState(true);
  const [selectedId, setSelectedId] = useState<string | null>(() => new URLSearchParams(location.search).get("asset"));
  const [error, setError] = useState("");
  const [live, setLive] = useState({ state: "connecting", error: "" });

  const loadAssets = useCallback(async () => {
    try {
      setAssets(await listAssets());
    } catch (err) {
      setError(errorMessage(err));
    } finally {
      setLoading(false);
    }
  }, []);
  const loadJobs = useCallback(async () => {
    try {
      setJobs(await listJobs());
    } catch (err) {
      setError(errorMessage(err));
    }
  }, []);

  const upsertJob = useCallback((job: Job) => {
    setJobs((all) => {
      const i = all.findIndex((j) => j.id === job.id);
      if (i < 0) return [job, ...all];
      const next = all.slice();
      next[i] = { ...all[i], ...job };
      return next;
    });
  }, []);

  useEffect(() => {
    void loadAssets();
    void loadJobs();
    listPresets().then(setPresets, (err) => setError(errorMessage(err)));
  }, [loadAssets, loadJobs]);

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
    return followStream({
      after: 0,
      open: (after, options) => client.streamJobs({ afterSequence: String(after) }, options),
      onReconnected: () => void loadJobs(),
      onStats: (s) => setLive({ state: s.state, error: s.error }),
      onEvent: (ev) => {
        if (ev.type === "progress" || ev.type === "status") {
          const known = jobsRef.current.some((j) => j.id === ev.jobId);
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
  }, [loadJobs, upsertJob]);

  const selected = assets.find((a) => a.id === selectedId) ?? null;
  const select = (id: string) => {
    setSelectedId(id);
    const url = new URL(location.href);
    url.searchParams.set("asset", id);
    history.replaceState(null, "", url);
  };

  return (
    <>
      <Header current="timeline" />
      <main className="timeline-layout">
        <ErrorBanner error={error} onDismiss={() => setError("")} />
        <Library
          assets={assets}
          loading={loading}
          selectedId={selectedId}
          onSelect={select}
          onScanned={loadAssets}
          onError={setError}
        />
        {selected ? (
          <AssetDetail
            key={selected.id}
            asset={selected}
            presets={presets}
            onJobCreated={upsertJob}
            onAssetChanged={(a) => setAssets((all) => all.map((x) => (x.id === a.id ? { ...x, ...a } : x)))}
            onAssetDeleted={(id) => {
              setAssets((all) => all.filter((x) => x.id !== id));
              setSelectedId(null);
            }}
          />
        ) : (
          <section className="panel detail">
            <Empty>Select an asset in the library to play it, trim it and transcode it.</Empty>
          </section>
        )}
        <JobQueue jobs={jobs} live={live} onJobChanged={upsertJob} />
      </main>
    </>
  );
}
