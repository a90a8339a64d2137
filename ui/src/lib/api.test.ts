import { describe, expect, it } from "vitest";
import { assetQueryVariables, defaultPreset, lit, mediaUrl, thumbnailUrl } from "./api";
import type { Asset, Preset } from "./types";

describe("lit (GraphQL literals)", () => {
  it("quotes and escapes strings so user text cannot break out of the query", () => {
    expect(lit("abc")).toBe('"abc"');
    expect(lit('say "hi"\\ }) { deleteAsset')).toBe('"say \\"hi\\"\\\\ }) { deleteAsset"');
    expect(lit("line 1\nline 2\ttab")).toBe('"line 1\\nline 2\\ttab"');
    expect(lit("\u0001")).toBe('"\\u0001"');
    expect(lit("élan ✓")).toBe('"élan ✓"');
  });

  it("writes numbers and booleans as GraphQL numbers and booleans", () => {
    expect(lit(2)).toBe("2");
    expect(lit(1.04)).toBe("1.04");
    expect(lit(-0.5)).toBe("-0.5");
    expect(lit(true)).toBe("true");
    expect(lit(false)).toBe("false");
  });

  it("refuses numbers GraphQL cannot express", () => {
    for (const v of [NaN, Infinity, -Infinity]) expect(() => lit(v)).toThrow("not a number");
  });
});

function asset(fields: Partial<Asset>): Asset {
  return {
    id: "id-1",
    path: "clip.mp4",
    filename: "clip.mp4",
    kind: "video",
    status: "ready",
    size: null,
    duration: null,
    container: null,
    videoCodec: null,
    audioCodec: null,
    width: null,
    height: null,
    fps: null,
    comments: "",
    error: null,
    url: "/media/in/clip.mp4",
    thumbnailUrl: "/api/assets/id-1/thumbnail",
    ...fields,
  };
}

describe("mediaUrl / thumbnailUrl", () => {
  it("plays the URL the API gave, signature and all (never one built by hand)", () => {
    const signed = "/media/in/shows/s01%20e02/%231%20take%3F.mov?exp=1795701600&sig=abc-_D";
    expect(mediaUrl(asset({ path: "shows/s01 e02/#1 take?.mov", url: signed }))).toBe(signed);
    expect(mediaUrl(asset({ url: "https://bucket.s3.example/in/clip.mp4?X-Amz-Signature=1" }))).toBe(
      "https://bucket.s3.example/in/clip.mp4?X-Amz-Signature=1",
    );
  });

  it("asks the API's thumbnail URL for a millisecond time and a width, keeping its signature", () => {
    expect(thumbnailUrl(asset({}), 0, 80)).toBe("/api/assets/id-1/thumbnail?t=0.000&w=80");
    const signed = asset({ thumbnailUrl: "/api/assets/id-1/thumbnail?exp=1795701600&sig=a%2Bb" });
    expect(thumbnailUrl(signed, 1.23456, 160)).toBe("/api/assets/id-1/thumbnail?exp=1795701600&sig=a%2Bb&t=1.235&w=160");
    // a URL that already names a time and width gets ours instead (one of each)
    const chosen = asset({ thumbnailUrl: "/api/assets/id-1/thumbnail?t=1.0&w=320&exp=9&sig=s" });
    expect(thumbnailUrl(chosen, 2, 96)).toBe("/api/assets/id-1/thumbnail?t=2.000&w=96&exp=9&sig=s");
  });
});

describe("defaultPreset", () => {
  const p = (name: string, videoCodec: string | null): Preset => ({
    id: name,
    name,
    container: "mp4",
    videoCodec,
    audioCodec: "aac",
    description: "",
  });

  it("prefers h264-720p, then any h264 preset, then any that encodes video, then the first", () => {
    expect(defaultPreset([p("copy", "copy"), p("h264-1080p", "libx264"), p("h264-720p", "libx264")])!.name).toBe("h264-720p");
    expect(defaultPreset([p("copy", "copy"), p("vp9", "libvpx-vp9"), p("h264-1080p", "libx264")])!.name).toBe("h264-1080p");
    expect(defaultPreset([p("copy", "copy"), p("aac", null), p("vp9", "libvpx-vp9")])!.name).toBe("vp9");
    expect(defaultPreset([p("copy", "copy"), p("aac", null)])!.name).toBe("copy");
  });

  it("is undefined without presets", () => {
    expect(defaultPreset([])).toBeUndefined();
  });
});

describe("assetQueryVariables (library filters sent to the server)", () => {
  it("sends the filters, trimmed, with the page", () => {
    expect(assetQueryVariables({ search: "  Interview ", kind: "video", status: "ready" }, 50, 100)).toEqual({
      search: "Interview",
      kind: "video",
      status: "ready",
      limit: 50,
      offset: 100,
    });
  });

  it("sends null for an empty filter (no filter) and a whole, non-negative page", () => {
    expect(assetQueryVariables({ search: "   ", kind: "" }, 20.7, -3)).toEqual({
      search: null,
      kind: null,
      status: null,
      limit: 20,
      offset: 0,
    });
    expect(assetQueryVariables({}, 10)).toMatchObject({ offset: 0 });
  });
});
