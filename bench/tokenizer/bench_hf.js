// bench/tokenizer/bench_hf.js TOKENIZER_JSON TEXT IDS_OUT [REPEATS [docs]] — encodes TEXT with Hugging
// Face `tokenizers` (the Rust library's Node binding, TOKENIZER.md §1's reference engine), no
// special tokens added, prints MB/s per run (wall and process CPU; load excluded) and writes the ids one per line.
const fs = require('fs');
const { Tokenizer } = require('tokenizers');

(async () => {
  const [jsonPath, textPath, idsOut, rep = '3', mode = 'whole'] = process.argv.slice(2);
  const tok = Tokenizer.fromFile(jsonPath);
  const text = fs.readFileSync(textPath, 'utf8');
  const bytes = Buffer.byteLength(text, 'utf8');
  let ids = null;
  for (let r = 0; r < Number(rep); r++) {
    const t0 = process.hrtime.bigint();
    const c0 = process.cpuUsage();
    // "docs": cut after every blank line, each piece encoded alone (same cut as bench_ds4.c)
    const parts = mode === 'docs' ? text.split(/(?<=\n\n)/) : [text];
    ids = [];
    for (const p of parts) {
      const enc = await tok.encode(p, null, { addSpecialTokens: false });
      for (const id of enc.getIds()) ids.push(id);
    }
    const s = Number(process.hrtime.bigint() - t0) / 1e9;
    const cu = process.cpuUsage(c0);  // all threads of the process (the binding encodes on a worker)
    const c = (cu.user + cu.system) / 1e6;
    console.log(`hf run ${r + 1} (${mode === 'docs' ? text.split(/(?<=\n\n)/).length + ' texts' : '1 text'}): ${bytes} bytes, ${ids.length} tokens, wall ${s.toFixed(3)} s = ${(bytes / 1e6 / s).toFixed(2)} MB/s, cpu ${c.toFixed(3)} s = ${(bytes / 1e6 / c).toFixed(2)} MB/s`);
  }
  fs.writeFileSync(idsOut, ids.join('\n') + '\n');
})();
