// The floor of a read that must ask R2 once, for `scripts/bench workers`: a manifest GET by tag stays consistent
// across isolates and locations (PIER_TAG_CACHE_TTL=0, the default) only by confirming the tag with R2, so its
// ratio to the empty Worker can never pass this Worker's. Each request is one `head` of a small object, as Pier's
// revalidation of a cached tag is.
const KEY = "bench/tag";

export default {
  async fetch(request, env) {
    let object = await env.BUCKET.head(KEY);
    if (object === null) {
      await env.BUCKET.put(KEY, "sha256:" + "0".repeat(64));
      object = await env.BUCKET.head(KEY);
    }
    return new Response("{}", { headers: { "content-type": "application/json", etag: object.httpEtag } });
  },
};
