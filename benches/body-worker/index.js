// The floor of the push memory figure of `scripts/bench workers --big`: a Worker that takes a blob push the way
// registry clients send one (POST, PATCHes, PUT ?digest=) and reads every body byte, as Pier must to hash it (a BYOB
// reader, one buffer reused), but keeps nothing and stores nothing. workerd's RSS growth under it is what delivering
// the bytes to any Worker costs under wrangler dev, before a registry does anything with them.
export default {
  async fetch(request) {
    if (request.body) {
      const reader = request.body.getReader({ mode: "byob" });
      let buffer = new ArrayBuffer(256 * 1024);
      for (;;) {
        const { done, value } = await reader.read(new Uint8Array(buffer));
        if (value) buffer = value.buffer;
        if (done) break;
      }
    }
    const location = "/v2/floor/blobs/uploads/1";
    if (request.method === "POST" || request.method === "PATCH") {
      return new Response(null, { status: 202, headers: { location, range: "0-0" } });
    }
    if (request.method === "PUT") {
      return new Response(null, { status: 201 });
    }
    return new Response("{}", { headers: { "content-type": "application/json" } });
  },
};
