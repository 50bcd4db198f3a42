// `/api/dbx/<path>` → dbx-backend's `/api/<path>`, with the API key added on the server.
import { configFromEnv, forward } from "../../../../lib/dbx-proxy.ts";

// Every call reaches dbx-backend: nothing here may be cached or prerendered.
export const dynamic = "force-dynamic";
export const runtime = "nodejs";

interface Context {
  params: Promise<{ path: string[] }>;
}

async function handle(request: Request, context: Context): Promise<Response> {
  const { path } = await context.params;
  return forward(request, path, configFromEnv());
}

export const GET = handle;
export const POST = handle;
export const DELETE = handle;
