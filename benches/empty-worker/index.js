// The baseline of `scripts/bench workers`: a Worker that answers every request at once with a small JSON body, run
// under the same wrangler/workerd as Pier, so Pier's read path can be reported as a ratio of what the platform allows.
export default {
  async fetch() {
    return new Response("{}", { headers: { "content-type": "application/json" } });
  },
};
