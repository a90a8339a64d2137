import { afterEach, describe, expect, it, vi } from "vitest";
import { ApiError, AuthError, errorMessage, gql, isAuthError, readGraphQL } from "./graphql";
import { onAuthNeeded, setToken } from "./settings";

const json = (body: unknown, status = 200, statusText = "") =>
  new Response(JSON.stringify(body), { status, statusText, headers: { "Content-Type": "application/json" } });

/** The ApiError a response turns into (fails the test if it gives data instead). */
async function failure(response: Response): Promise<ApiError> {
  try {
    await readGraphQL(response);
  } catch (err) {
    expect(err).toBeInstanceOf(ApiError);
    return err as ApiError;
  }
  throw new Error("expected an ApiError");
}

describe("readGraphQL", () => {
  it("returns the data", async () => {
    await expect(readGraphQL(json({ data: { assets: [{ id: "a" }] } }))).resolves.toEqual({ assets: [{ id: "a" }] });
  });

  it("shows the API's error messages as they are, joined", async () => {
    const err = await failure(json({ errors: [{ message: "Asset not found" }, { message: "bad preset" }], data: null }));
    expect(err.message).toBe("Asset not found; bad preset");
  });

  it("prefers the API's messages to the HTTP status (a 400 with errors, a 401 with a reason)", async () => {
    expect((await failure(json({ errors: [{ message: "Syntax Error: x" }] }, 400))).message).toBe("Syntax Error: x");
    expect((await failure(json({ errors: [{ message: "token expired" }] }, 401))).message).toBe("token expired");
  });

  it("fails on errors even when partial data came with them", async () => {
    const err = await failure(json({ data: { job: null }, errors: [{ message: "job: permission denied" }] }));
    expect(err.message).toBe("job: permission denied");
  });

  it("names errors without a usable message instead of printing undefined", async () => {
    const err = await failure(json({ errors: [{}, null, { message: 42 }, { message: "real one" }] }));
    expect(err.message).toBe("unknown GraphQL error; unknown GraphQL error; unknown GraphQL error; real one");
  });

  it("says to set the token on 401 and 403 without a message", async () => {
    for (const status of [401, 403]) {
      expect((await failure(new Response("", { status }))).message).toBe("Not authorised: set the API token in Settings.");
      expect((await failure(json({ detail: "no" }, status))).message).toBe("Not authorised: set the API token in Settings.");
      expect(isAuthError(await failure(new Response("", { status })))).toBe(true);
    }
  });

  it("tells a refused token (extensions.code UNAUTHENTICATED) from other errors", async () => {
    const message = "this operation needs 'Authorization: Bearer <token>' (MPR_API_TOKEN is set)";
    const refused = await failure(json({ data: null, errors: [{ message, extensions: { code: "UNAUTHENTICATED" } }] }));
    expect(refused).toBeInstanceOf(AuthError);
    expect(refused.message).toBe(message);
    for (const body of [
      { errors: [{ message: "Asset not found" }] },
      { errors: [{ message: "x", extensions: { code: "BAD_USER_INPUT" } }] },
      { errors: [{ message: "x", extensions: null }] },
    ]) {
      const err = await failure(json(body));
      expect(isAuthError(err)).toBe(false);
    }
    expect(isAuthError(new Error("Authorization: Bearer"))).toBe(false);
  });

  it("reports the HTTP status for a body that is not GraphQL", async () => {
    expect((await failure(new Response("<html>Bad Gateway</html>", { status: 502, statusText: "Bad Gateway" }))).message).toBe(
      "The server answered 502 Bad Gateway",
    );
    expect((await failure(new Response("oops", { status: 500 }))).message).toBe("The server answered 500");
    expect((await failure(new Response(null, { status: 200 }))).message).toBe("The server answered 200");
  });

  it("does not trip over JSON that is not an object", async () => {
    for (const body of ["null", "42", '"errors"', "[]", "true"]) {
      const err = await failure(new Response(body, { status: 200 }));
      expect(err.message).toBe("The server answered 200");
    }
  });

  it("treats data: null or an errors field that is not a list as no data", async () => {
    expect((await failure(json({ data: null }))).message).toBe("The server answered 200");
    expect((await failure(json({ data: null, errors: "boom" }))).message).toBe("The server answered 200");
    expect((await failure(json({ data: null, errors: [] }))).message).toBe("The server answered 200");
  });
});

describe("gql", () => {
  afterEach(() => {
    vi.unstubAllGlobals();
  });

  it("announces a refused token to the page (the token prompt), and only that", async () => {
    let announced = 0;
    const stop = onAuthNeeded(() => announced++);
    try {
      const refusal = { data: null, errors: [{ message: "needs the token", extensions: { code: "UNAUTHENTICATED" } }] };
      vi.stubGlobal("fetch", async () => json(refusal));
      await expect(gql("{ assets { id } }")).rejects.toBeInstanceOf(AuthError);
      expect(announced).toBe(1);
      vi.stubGlobal("fetch", async () => json({ errors: [{ message: "bad id" }] }));
      await expect(gql("{ asset(id: 1) { id } }")).rejects.toThrow("bad id");
      vi.stubGlobal("fetch", async () => json({ data: { assets: [] } }));
      await expect(gql("{ assets { id } }")).resolves.toEqual({ assets: [] });
      expect(announced).toBe(1);
    } finally {
      stop();
    }
  });

  it("does not announce a refusal of a request sent before a new token was saved", async () => {
    let announced = 0;
    const stop = onAuthNeeded(() => announced++);
    try {
      const refusal = { data: null, errors: [{ message: "needs the token", extensions: { code: "UNAUTHENTICATED" } }] };
      let answer: (r: Response) => void = () => undefined;
      vi.stubGlobal("fetch", () => new Promise<Response>((resolve) => (answer = resolve)));
      const old = gql("{ assets { id } }");
      await Promise.resolve(); // the request is on its way without a token
      setToken("new-token");
      answer(json(refusal));
      await expect(old).rejects.toBeInstanceOf(AuthError);
      expect(announced).toBe(0);
    } finally {
      stop();
      setToken("");
    }
  });

  it("turns a network failure into a readable error", async () => {
    // Node's fetch cannot reach a relative URL: the same path as a server that is down
    await expect(gql("{ assets { id } }")).rejects.toThrow(
      new ApiError("Cannot reach the MPR server. Is `mpr serve` running?"),
    );
  });
});

describe("errorMessage", () => {
  it("is the message of an Error, or the value as text", () => {
    expect(errorMessage(new ApiError("boom"))).toBe("boom");
    expect(errorMessage(new TypeError("x is undefined"))).toBe("x is undefined");
    expect(errorMessage("plain")).toBe("plain");
    expect(errorMessage(404)).toBe("404");
    expect(errorMessage(null)).toBe("null");
  });
});
