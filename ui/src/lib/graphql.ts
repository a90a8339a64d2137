import { authHeaders, reportAuthNeeded } from "./settings";

/** An error to show to the user as it is: the API's own message, or what went wrong on the way. */
export class ApiError extends Error {}

/** The server wants the API token (none sent, or a wrong one): the page asks for it. */
export class AuthError extends ApiError {}

/** True for an AuthError: show the token prompt rather than an error banner. */
export function isAuthError(err: unknown): err is AuthError {
  return err instanceof AuthError;
}

interface GraphQLResponse<T> {
  data?: T | null;
  errors?: { message?: unknown; extensions?: { code?: unknown } | null }[] | null;
}

/** Run one GraphQL operation against /graphql; throws ApiError with a readable message. */
export async function gql<T>(query: string, variables: Record<string, unknown> = {}): Promise<T> {
  let response: Response;
  const auth = authHeaders();
  try {
    response = await fetch("/graphql", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json", ...auth },
      body: JSON.stringify({ query, variables }),
    });
  } catch {
    throw new ApiError("Cannot reach the MPR server. Is `mpr serve` running?");
  }
  try {
    return await readGraphQL<T>(response);
  } catch (err) {
    // a refusal of a request sent before a new token was saved says nothing about the new one
    if (isAuthError(err) && auth.Authorization === authHeaders().Authorization) reportAuthNeeded();
    throw err;
  }
}

/** The data of a GraphQL response, or an ApiError with the API's messages / the HTTP status. */
export async function readGraphQL<T>(response: Response): Promise<T> {
  let body: GraphQLResponse<T> | null = null;
  try {
    body = (await response.json()) as GraphQLResponse<T>;
  } catch {
    body = null;
  }
  if (body !== null && typeof body !== "object") body = null;
  if (Array.isArray(body?.errors) && body.errors.length) {
    const messages = body.errors.map((e) =>
      e && typeof e.message === "string" && e.message ? e.message : "unknown GraphQL error",
    );
    const auth = body.errors.some((e) => e?.extensions?.code === "UNAUTHENTICATED");
    throw new (auth ? AuthError : ApiError)(messages.join("; "));
  }
  if (response.status === 401 || response.status === 403) {
    throw new AuthError("Not authorised: set the API token in Settings.");
  }
  if (!response.ok || !body?.data) {
    throw new ApiError(`The server answered ${response.status} ${response.statusText || ""}`.trim());
  }
  return body.data;
}

/** The message of any thrown value. */
export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
