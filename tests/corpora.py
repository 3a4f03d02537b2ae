"""Test corpora made here: Korean documents long enough to overflow a small model's window.

Twelve hyangga, one document each: a fact sentence naming the poem and who made it, then
paragraphs of commentary about that poem (each paragraph names the poem and its maker, so
every chunk answers "who made it"). A chunk is hundreds of Hangul syllables: about 1,500 to
2,000 SmolLM2 tokens, so a handful of them overflow a 4,096-token window.
"""

from __future__ import annotations

from pathlib import Path

HYANGGA = [
    ("처용가", "처용"), ("서동요", "무왕"), ("제망매가", "월명사"), ("헌화가", "견우노옹"),
    ("찬기파랑가", "충담사"), ("모죽지랑가", "득오"), ("도솔가", "월명사"), ("풍요", "양지"),
    ("원왕생가", "광덕"), ("혜성가", "융천사"), ("안민가", "충담사"), ("우적가", "영재"),
]  # fmt: skip

_COMMENTARY = [
    "{t}의 노랫말은 향찰로 적혀 전하며, 학자마다 읽는 방식이 조금씩 다르다.",
    "{t}를 둘러싼 설화는 삼국유사에 실려 있고, 노래가 불린 사정을 자세히 전한다.",
    "오늘날 {t}를 읽는 사람들은 옛말의 소리와 뜻을 함께 살피며 해석을 이어 간다.",
    "{t}에 담긴 마음은 당시 사람들의 믿음과 생활을 짐작하게 해 주는 귀한 자료이다.",
    "여러 연구자가 {t}의 구절 하나하나를 두고 오랫동안 서로 다른 풀이를 내놓았다.",
    "{t}는 신라 사람들이 노래로 세상과 마음을 다스리려 했다는 점을 잘 보여 준다.",
]


def hyangga_corpus(folder: Path, paragraphs: int = 8) -> list[tuple[str, str, str]]:
    """Write the documents into `folder`; returns (file name, title, author) for each."""
    folder.mkdir(parents=True, exist_ok=True)
    made = []
    for i, (title, author) in enumerate(HYANGGA):
        fact = f"{title}는 {author}이(가) 지었다고 전하는 신라의 향가이다."
        body = [fact]
        for p in range(paragraphs):
            lines = [_COMMENTARY[(p + j) % len(_COMMENTARY)].format(t=title) for j in range(5)]
            lines.insert(p % 5, f"{title}는 {author}이(가) 지었다고 전한다.")
            body.append(" ".join(lines))
        name = f"hyangga-{i:02d}.txt"
        (folder / name).write_text("\n\n".join(body) + "\n", encoding="utf-8")
        made.append((name, title, author))
    return made
