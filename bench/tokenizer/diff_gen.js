// bench/tokenizer/diff_gen.js TOKENIZER_JSON OUT.jsonl [N] — differential test input: N (default
// 20000) random strings glued from fragments that stress every pre-tokenizer rule and the
// added-token matcher (whitespace kinds, digits, CJK/kana, scripts, emoji, Unicode 16 code
// points, added tokens and near misses, controls), each with the ids Hugging Face gives it and
// its decode with skip_special_tokens; plus a random id sequence and its (lossy) decode.
// Deterministic (fixed LCG seed). diff.sh compares ds4 against it.
const fs = require('fs');
const { Tokenizer } = require('tokenizers');
const tok = Tokenizer.fromFile(process.argv[2]);
let seed = 12345;
const rnd = (n) => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed % n; };
const pools = [
  ' ', '  ', '\t', '\n', '\r\n', '\r', '\u00a0', '\u3000', '\u2009', '\u0085', '\u200b', '\ufeff', '\u000b', '\u000c', '\u001f',
  'a', 'Z', 'hello', 'World', "'s", "'T", '.txt', '#', '-', '_x', '$', '@', '!!', '...', '(', '}', ';', '"', '`',
  '0', '12', '12345', '٣', '５', '½', '²', 'Ⅻ', '①',
  '你好', '世界', '東京', '・', 'ー', 'ひらがな', 'カタカナ', '〇', '々', '，', '。', '！', '𠀀', '龦',
  '한국어', 'ᄀ', 'é', 'e\u0301', '\u0301', 'Ж', 'ω', 'ع', 'ש', 'क', '\u093f', 'ก', 'ა',
  '😀', '👍🏽', '🇫🇷', '1️⃣', '\u2764\ufe0f', '👨‍👩‍👧', '🫩', '𜰀', '𞀰',
  '<｜User｜>', '<｜Assistant｜>', '<think>', '</think>', '｜DSML｜', '<｜/table>｜', '<｜begin▁of▁sentence｜>', '<|EOT|>',
  '<', '>', '｜', '▁', '<|', '|>', '<｜', '｜>', '<dsml:', '</dsml:', '<|place_holder_mm_span_0021|>',
  '\u0000', '\u0001', '\ue000', '\ufffd', 'Ġ', 'Ċ', '\u2028', '\u180e',
];
const out = [];
(async () => {
  for (let i = 0; i < Number(process.argv[4] || 20000); i++) {
    let s = '';
    const k = 1 + rnd(12);
    for (let j = 0; j < k; j++) s += pools[rnd(pools.length)];
    const ids = (await tok.encode(s, null, { addSpecialTokens: false })).getIds();
    const skip = await tok.decode(ids, true);
    // random ids (mostly byte-fragment tokens below 1000, some anywhere): lossy UTF-8 decode
    const rid = [];
    for (let j = 1 + rnd(6); j > 0; j--) rid.push(rnd(4) ? rnd(1000) : rnd(129280));
    const rdec = await tok.decode(rid, false);
    out.push(JSON.stringify({ text: s, ids, skip, rid, rdec }));
  }
  fs.writeFileSync(process.argv[3], out.join('\n') + '\n');
  console.log('wrote', out.length);
})();
