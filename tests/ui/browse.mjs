// Drive Pier's web UI in a real browser (Debian's Chromium through npm playwright-core; no browser download).
//
//   node tests/ui/browse.mjs SPEC.json
//
// SPEC (written by tests/clients/test_ui.py after pushing with skopeo and oras):
//   {"mode": "open", "url": ..., "host": ..., "single": {"repo", "tag", "digest"}, "multi": {"repo", "tag",
//    "digest", "children": [...]}, "referrer": {"digest", "artifactType"}, "search": "...", "screenshots": DIR|null}
//   {"mode": "auth", "url": ..., "repo", "tag", "publicRepo", "users": {"alice": pw, "reader": pw}, "screenshots"}
// Exits 0 when every check passed; prints each step, and on failure the page's URL and text.
import { chromium } from "playwright-core";
import { readFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";

const spec = JSON.parse(readFileSync(process.argv[2], "utf8"));
const base = spec.url.replace(/\/$/, "");
const executablePath = process.env.PIER_CHROMIUM || "/usr/bin/chromium";
// As root and offline: no sandbox, and none of Chromium's background calls home.
const args = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
  "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"];

function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
  console.log(`  ok: ${what}`);
}

async function shot(page, name, opts = {}) {
  if (!spec.screenshots) return;
  mkdirSync(spec.screenshots, { recursive: true });
  await page.screenshot({ path: join(spec.screenshots, name), ...opts });
  console.log(`  screenshot ${name}`);
}

/** A POST from outside the page (no CSRF field unless given), as a forging site's form would send it. */
async function forgedPost(path, form, cookie, extra = {}) {
  const r = await fetch(base + path, {
    method: "POST", redirect: "manual",
    headers: { "content-type": "application/x-www-form-urlencoded", ...(cookie ? { cookie } : {}), ...extra },
    body: new URLSearchParams(form).toString(),
  });
  return r.status;
}

async function apiStatus(path, auth) {
  const r = await fetch(base + path, { headers: auth ? { authorization: auth } : {} });
  return r.status;
}

async function cookieHeader(context) {
  return (await context.cookies(base)).map((c) => `${c.name}=${c.value}`).join("; ");
}

async function openMode(browser) {
  const context = await browser.newContext({ viewport: { width: 1180, height: 760 }, colorScheme: "light" });
  await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: base });
  const page = await context.newPage();
  const { single, multi, referrer } = spec;

  console.log("repositories");
  await page.goto(base + "/");
  check(await page.getByRole("heading", { name: "Repositories" }).isVisible(), "the repository list answers at /");
  await shot(page, "repositories.png");
  // Other tests' repositories may fill the first page: narrow it to this run's.
  await page.goto(`${base}/?q=${encodeURIComponent(spec.run)}`);
  check(await page.getByRole("link", { name: single.repo, exact: true }).isVisible(), "the single-arch repository is listed");
  check(await page.getByRole("link", { name: multi.repo, exact: true }).isVisible(), "the multi-arch repository is listed");

  console.log("search");
  await page.goto(base + "/");
  await page.keyboard.press("/");
  check(await page.evaluate(() => document.activeElement && document.activeElement.id === "q"), "'/' focuses the search box");
  await page.keyboard.type(spec.search);
  await page.keyboard.press("Enter");
  await page.waitForURL((u) => u.searchParams.get("q") === spec.search);
  check(await page.getByRole("link", { name: multi.repo, exact: true }).isVisible(), "the search finds the multi-arch repository");
  check((await page.getByRole("link", { name: single.repo, exact: true }).count()) === 0, "and not the other one");
  check(await page.getByLabel("Search repositories").inputValue() === spec.search, "the search box keeps the query");
  await shot(page, "search.png");

  console.log("repository");
  await page.goto(`${base}/?q=${encodeURIComponent(spec.run)}`);
  await page.getByRole("link", { name: single.repo, exact: true }).click();
  await page.waitForURL(`**/ui/r/${single.repo}`);
  const pull = `docker pull ${spec.host}/${single.repo}:${single.tag}`;
  const button = page.getByRole("button", { name: `Copy pull command for ${single.tag}` });
  check(await button.getAttribute("data-copy") === pull, "the copy button holds the pull command");
  await button.click();
  check(await page.evaluate(() => navigator.clipboard.readText()) === pull, "clicking it puts the pull command on the clipboard");
  check((await page.getByText(single.digest.slice(0, 19), { exact: true }).count()) > 0, "the short digest is shown");
  await shot(page, "repository.png");

  console.log("manifest (tag)");
  await page.getByRole("link", { name: single.tag, exact: true }).click();
  await page.waitForURL(`**/-/${single.tag}`);
  const text = await page.locator("main").innerText();
  for (const expected of ["Layers", "Configuration", "linux/amd64", "/usr/local/bin/pier-demo", "8080/tcp", "APP_MODE=production",
    "org.opencontainers.image.source", "COPY pier-demo /usr/local/bin/", referrer.artifactType]) {
    check(text.includes(expected), `the manifest page shows ${expected}`);
  }
  const byDigest = page.getByRole("button", { name: "Copy digest", exact: true });
  check((await byDigest.getAttribute("data-copy")) === single.digest, "the digest copy button holds the digest");
  await shot(page, "manifest.png", { fullPage: true });

  console.log("referrer");
  await page.locator(`a[href$="/-/${referrer.digest}"]`).first().click();
  await page.waitForURL(`**/-/${referrer.digest}`);
  const rtext = await page.locator("main").innerText();
  check(rtext.includes("Refers to") && rtext.includes(referrer.artifactType), "the referrer's page names its subject and artifact type");
  await shot(page, "referrer.png");

  console.log("index");
  await page.goto(`${base}/ui/r/${multi.repo}`);
  const row = page.locator("tr", { hasText: multi.tag });
  check((await row.innerText()).includes("linux/arm64"), "the tag row lists the index's platforms");
  await row.getByRole("link", { name: multi.tag, exact: true }).click();
  await page.waitForURL(`**/-/${multi.tag}`);
  const itext = await page.locator("main").innerText();
  check(itext.includes("Platforms") && itext.includes("linux/amd64") && itext.includes("linux/arm64"), "the index page lists its platforms");
  await shot(page, "index.png", { fullPage: true });
  await page.locator(`a[href$="/-/${multi.children[1]}"]`).click();
  await page.waitForURL(`**/-/${multi.children[1]}`);
  check((await page.locator("main").innerText()).includes("linux/arm64"), "a platform's manifest opens from the index");

  console.log("phone width and dark mode");
  const phone = await browser.newContext({ viewport: { width: 390, height: 800 }, colorScheme: "dark", isMobile: true });
  const ppage = await phone.newPage();
  await ppage.goto(`${base}/ui/r/${multi.repo}`);
  const overflow = await ppage.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  check(overflow <= 1, `no horizontal scrolling at phone width (overflow ${overflow}px)`);
  const bg = await ppage.evaluate(() => getComputedStyle(document.body).backgroundColor);
  check(bg === "rgb(13, 17, 23)", `dark mode follows the system setting (${bg})`);
  await shot(ppage, "phone-dark.png");
  await phone.close();

  console.log("keyboard");
  await page.goto(base + "/");
  await page.keyboard.press("Tab");
  check(await page.evaluate(() => document.activeElement.textContent.includes("Skip to content")), "the first Tab reaches 'Skip to content'");

  console.log("delete (open registry)");
  const anon = await cookieHeader(context);
  check(await forgedPost("/ui/delete", { repo: single.repo, ref: single.tag }, anon) === 403, "a forged POST without the CSRF token is refused (403)");
  await page.goto(`${base}/ui/r/${single.repo}`);
  await page.getByRole("link", { name: `Delete tag ${single.tag}` }).click();
  await page.waitForURL(/\/ui\/delete\?/);
  check((await page.locator("main").innerText()).includes("cannot be undone"), "a confirmation page comes first");
  await shot(page, "delete.png");
  const withCookie = await cookieHeader(context);
  check(await forgedPost("/ui/delete", { repo: single.repo, ref: single.tag }, withCookie, { origin: "https://evil.example" }) === 403,
    "a POST from another origin is refused even with the cookie");
  await page.getByRole("button", { name: "Delete", exact: true }).click();
  await page.waitForURL(`**/ui/r/${single.repo}?deleted=*`);
  check((await page.locator("main").innerText()).includes(`Deleted ${single.tag}.`), "the repository page confirms the delete");
  check((await page.getByRole("link", { name: single.tag, exact: true }).count()) === 0, "the tag is gone from the page");
  check(await apiStatus(`/v2/${single.repo}/manifests/${single.tag}`) === 404, "the tag is gone from the /v2/ API");
  check(await apiStatus(`/v2/${single.repo}/manifests/${single.digest}`) === 200, "the manifest stays, by digest");
  await context.close();
}

async function authMode(browser) {
  const context = await browser.newContext({ viewport: { width: 1180, height: 760 } });
  const page = await context.newPage();
  const basic = (u) => "Basic " + Buffer.from(`${u}:${spec.users[u]}`).toString("base64");

  console.log("anonymous");
  await page.goto(`${base}/?q=${encodeURIComponent(spec.run)}`);
  const listed = await page.locator("main").innerText();
  check(listed.includes(spec.publicRepo), "anonymous sees the repository anonymous may pull");
  check(!listed.includes(spec.repo), "and not the private one");

  console.log("log in");
  await page.getByRole("link", { name: "Log in" }).click();
  await page.getByLabel("User name").fill("reader");
  await page.getByLabel("Password").fill("wrong-password");
  await page.getByRole("button", { name: "Log in" }).click();
  check(await page.getByRole("alert").isVisible(), "a wrong password is refused with a message");
  await shot(page, "login.png");
  await page.getByLabel("User name").fill("reader");
  await page.getByLabel("Password").fill(spec.users.reader);
  await page.getByRole("button", { name: "Log in" }).click();
  await page.waitForURL((u) => u.pathname === "/");
  await page.goto(`${base}/?q=${encodeURIComponent(spec.run)}`);
  const [session] = (await context.cookies(base)).filter((c) => c.name === "pier_session");
  check(session && session.httpOnly && session.sameSite === "Strict", "the session cookie is HttpOnly and SameSite=Strict");
  check((await page.locator("main").innerText()).includes(spec.repo), "reader sees the repository reader may pull");

  console.log("reader may not delete");
  await page.goto(`${base}/ui/r/${spec.repo}`);
  check((await page.getByRole("link", { name: /^Delete/ }).count()) === 0, "no delete button for reader");
  const readerCookie = await cookieHeader(context);
  const readerCsrf = await page.locator("input[name=csrf]").first().getAttribute("value");
  check(await forgedPost("/ui/delete", { repo: spec.repo, ref: spec.tag }, readerCookie) === 403, "a forged POST without the CSRF token is refused (403)");
  check(await forgedPost("/ui/delete", { repo: spec.repo, ref: spec.tag, csrf: readerCsrf }, readerCookie) === 403,
    "reader's own delete POST is refused (403)");
  check(await apiStatus(`/v2/${spec.repo}/tags/list`, null) === 401, "the API ignores the session cookie's browser");
  await page.getByRole("button", { name: "Log out" }).click();
  await page.waitForURL((u) => u.pathname === "/");
  await page.goto(`${base}/?q=${encodeURIComponent(spec.run)}`);
  check(!(await page.locator("main").innerText()).includes(spec.repo), "after logging out the private repository is hidden again");

  console.log("alice deletes");
  await page.goto(`${base}/ui/login?next=${encodeURIComponent(`/ui/r/${spec.repo}`)}`);
  await page.getByLabel("User name").fill("alice");
  await page.getByLabel("Password").fill(spec.users.alice);
  await page.getByRole("button", { name: "Log in" }).click();
  await page.waitForURL(`**/ui/r/${spec.repo}`);
  await shot(page, "repository-signed-in.png");
  const aliceCookie = await cookieHeader(context);
  check(await forgedPost("/ui/delete", { repo: spec.repo, ref: spec.tag }, aliceCookie) === 403, "alice's cookie without the CSRF token is refused");
  await page.getByRole("link", { name: `Delete tag ${spec.tag}` }).click();
  await page.getByRole("button", { name: "Delete", exact: true }).click();
  await page.waitForURL(`**/ui/r/${spec.repo}?deleted=*`);
  check(await apiStatus(`/v2/${spec.repo}/manifests/${spec.tag}`, basic("alice")) === 404, "the deleted tag is gone from the /v2/ API");
  await context.close();
}

const browser = await chromium.launch({ executablePath, args });
let page;
try {
  if (spec.mode === "open") await openMode(browser);
  else if (spec.mode === "auth") await authMode(browser);
  else throw new Error(`unknown mode ${spec.mode}`);
  console.log("all browser checks passed");
} catch (e) {
  console.error(e.stack || String(e));
  for (const ctx of browser.contexts()) for (const p of ctx.pages()) {
    console.error(`--- page ${p.url()} ---`);
    try { console.error((await p.locator("body").innerText()).slice(0, 3000)); } catch (_) { /* closed */ }
  }
  process.exitCode = 1;
} finally {
  await browser.close();
}
