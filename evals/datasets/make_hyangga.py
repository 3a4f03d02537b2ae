"""Writes hyangga.jsonl beside this file. The hyangchal texts were copied from the public pages
listed in ../shared/data/hyangga-sources.md (each item keeps its URL); the modern renderings
were written for this project. Run: python evals/datasets/make_hyangga.py"""

import json
from pathlib import Path

OUT = Path(__file__).with_name("hyangga.jsonl")
# Variant characters folded to one form each (copies differ; see the dataset README).
NORMALISE = {"肸": "肹", "盻": "肹", "兮": "肹", "慙": "慚", "兒": "皃", "貌": "皃", "陁": "陀"}


def norm(text):
    changed = sorted({c for c in text if c in NORMALISE})
    for a, b in NORMALISE.items():
        text = text.replace(a, b)
    return text, changed


OURS = "llamapipe 프로젝트가 작성한 현대어 풀이 (독자적 해석, CC0)"
items = [
    (
        "cheoyongga",
        "처용가",
        "處容歌",
        "삼국유사 권2 기이 處容郞 望海寺",
        "https://ko.wikisource.org/wiki/%EC%B2%98%EC%9A%A9%EA%B0%80",
        "東京明期月良\n夜入伊遊行如可\n入良沙寢矣見昆\n脚烏伊四是良羅\n二兮隱吾下於叱古\n二兮隱誰支下焉古\n本矣吾下是如馬於隱\n奪叱良乙何如爲理古",
        "서라벌 밝은 달밤에 밤늦도록 놀러 다니다가\n집에 들어와 잠자리를 보니 다리가 넷이로구나.\n둘은 나의 것인데 둘은 누구의 것인가.\n본래 내 것이었으나 빼앗긴 것을 어찌하겠는가.",
        "東京ᄇᆞᆰᄋᆞᆫᄃᆞᆯ애\n밤들어노녀다가\n들어사자리에보곤\n가ᄅᆞᆯ이네히러라\n둘은나이엇고\n둘은누이언고\n믿이내이다마ᄅᆞᆫ\nᄲᅢ앗어늘엇디ᄒᆞ리잇고",
    ),
    (
        "seodongyo",
        "서동요",
        "薯童謠",
        "삼국유사 권2 무왕",
        "https://m.reportworld.co.kr/humanities/h1462187",
        "善化公主主隱\n他密只嫁良置古\n薯童房乙\n夜矣卯乙抱遣去如",
        "선화공주님은 남몰래 정을 통해 두고\n밤이면 서동의 방으로 몰래 안겨 간다.",
        None,
    ),
    (
        "heonhwaga",
        "헌화가",
        "獻花歌",
        "삼국유사 권2 水路夫人",
        "http://www.kwhsa.org/index.php?mid=yusa&page=2&document_srl=1632",
        "紫布岩乎邊希\n執音乎手母牛放敎遣\n吾肹不喩慚肹伊賜等\n花肹折叱可獻乎理音如",
        "자줏빛 바위 가에 잡고 있던 암소를 놓아두고\n나를 부끄러워하지 않으신다면\n저 꽃을 꺾어 바치겠습니다.",
        None,
    ),
    (
        "jemangmaega",
        "제망매가",
        "祭亡妹歌",
        "삼국유사 권5 감통 月明師兜率歌",
        "http://davincimap.co.kr/davBase/Source/davSource.jsp?Job=Body&SourID=SOUR004144",
        "生死路隱\n此矣有阿米次肹伊遣\n吾隱去內如辭叱都\n毛如云遣去內尼叱古\n於內秋察早隱風未\n此矣彼矣浮良落尸葉如\n一等隱枝良出古\n去奴隱處毛冬乎丁\n阿也彌陀刹良逢乎吾\n道修良待是古如",
        "삶과 죽음의 길이 여기 있어 두려워하며\n나는 간다는 말도 다 하지 못하고 가 버렸는가.\n어느 가을 이른 바람에 여기저기 떨어지는 잎처럼\n한 가지에서 났어도 가는 곳을 모르는구나.\n아, 극락에서 만날 나는 도를 닦으며 기다리겠다.",
        None,
    ),
    (
        "changiparangga",
        "찬기파랑가",
        "讚耆婆郞歌",
        "삼국유사 권2 景德王 忠談師 表訓大德",
        "http://ko.lihe.wikia.com/wiki/%EC%B0%AC%EA%B8%B0%ED%8C%8C%EB%9E%91%EA%B0%80",
        "咽嗚爾處米\n露曉邪隱月羅理\n白雲音逐干浮去隱安支下\n沙是八陵隱汀理也中\n耆郞矣兒史是史藪邪\n逸烏川理叱磧惡希\n郞也持以支如賜烏隱\n心未際叱肹逐內良齊\n阿耶栢史叱枝次高支好\n雪是毛冬乃乎尸花判也",
        "구름을 열어젖히고 나타난 달이\n흰 구름을 따라 떠가는 것이 아니냐.\n새파란 냇가에 기파랑의 모습이 비치는구나.\n일오 냇가 자갈벌에서 낭이 지니셨던 마음의 끝을 따르고 싶다.\n아, 잣나무 가지가 높아 눈도 덮지 못할 고고한 이여.",
        None,
    ),
    (
        "mojukjirangga",
        "모죽지랑가",
        "慕竹旨郞歌",
        "삼국유사 권2 孝昭王代 竹旨郞",
        "https://blog.aladin.co.kr/somnus/2797431",
        "去隱春皆林米\n毛冬居叱哭屋尸以憂音\n阿冬音乃叱好支賜烏隱\n貌史年數就音墮支行齊\n目煙廻於尸七史伊衣\n逢烏支惡知作乎下是\n郞也慕理尸心未 行乎尸道尸\n蓬次叱巷中宿尸夜音有叱下是",
        "지나간 봄을 그리워하니 모든 것이 서러워 시름에 잠기는구나.\n아름답던 그 얼굴이 해가 갈수록 시들어 가는구나.\n눈 깜짝할 사이에라도 만나 뵐 수 있기를.\n낭이여, 그리운 마음이 가는 길에 쑥 우거진 마을에서 잘 밤이 있으리라.",
        None,
    ),
    (
        "pungyo",
        "풍요",
        "風謠",
        "삼국유사 권4 의해 良志使錫",
        "https://leeza.tistory.com/39793",
        "來如來如來如\n來如哀反多羅\n哀反多矣徒良\n功德修叱如良來如",
        "오다 오다 오다, 오는구나.\n서럽구나, 서러운 이들이여.\n공덕을 닦으러 오는구나.",
        None,
    ),
    (
        "dosolga",
        "도솔가",
        "兜率歌",
        "삼국유사 권5 감통 月明師兜率歌",
        "http://davincimap.co.kr/davBase/Source/davSource.jsp?Job=Body&SourID=SOUR004144",
        "今日此矣散花唱良\n巴寶白乎隱花良汝隱\n直等隱心音矣命叱使以惡只\n彌勒座主陪立羅良",
        "오늘 여기서 산화가를 부르며 뿌리는 꽃아,\n너는 곧은 마음이 시키는 대로\n미륵부처님을 모시어라.",
        None,
    ),
    (
        "hyeseongga",
        "혜성가",
        "彗星歌",
        "삼국유사 권5 감통 融天師 彗星歌",
        "http://www.jisikworld.com/report-view/244728",
        "舊理東尸汀叱 乾達婆矣\n遊鳥隱城叱良望良古\n倭理叱軍置來叱多\n烽燒邪隱邊也 藪耶\n三花矣岳音見賜烏尸聞古\n月置八切爾數於將來尸波衣\n道尸掃尸星利望良古\n彗星也白反也人是有叱多\n後句 達阿羅浮去伊叱等邪\n此也友物叱所音叱彗叱只有叱故",
        "옛날 동해 물가에 건달파가 놀던 성을 바라보고\n왜군이 왔다고 봉화를 올린 변방이 있었다.\n세 화랑이 산 구경을 오신다는 말을 듣고\n달도 부지런히 길을 비추는데\n길을 쓰는 별을 보고 혜성이라 말한 사람이 있구나.\n아, 달은 저 아래로 떠가 버렸는데 이제 무슨 혜성이 있겠는가.",
        None,
    ),
    (
        "yegyeongjebulga",
        "예경제불가",
        "禮敬諸佛歌",
        "균여전 보현십원가 제1수",
        "http://www.chbang.com/index.php?mid=chbang2&category=0&page=2&document_srl=24609",
        "心未 筆留\n慕呂白乎隱 佛體 前衣\n拜內乎隱 身萬隱\n法界 毛叱所只 至去良\n塵塵馬洛 佛體叱 刹亦\n刹刹每如 邀里白乎隱\n法界 滿賜隱 佛體\n九世 盡良 禮爲白齊\n歎曰 身語意業无疲厭\n此良 夫 作沙毛叱等耶",
        "마음의 붓으로 그려 모시는 부처님 앞에\n절하는 이 몸은 온 법계 끝까지 이르러라.\n티끌마다 부처님의 절이 있고 절마다 모시는\n법계에 가득하신 부처님께 영원토록 예배하리라.\n아, 몸과 말과 뜻으로 짓는 일에 지치지 않고 이렇게 늘 하리라.",
        None,
    ),
]
with OUT.open("w", encoding="utf-8") as f:
    for key, title, hanja, where, url, source, modern, ogura in items:
        text, changed = norm(source)
        meta = {
            "title": title,
            "hanja": hanja,
            "poem": key,
            "found_in": where,
            "source_url": url,
            "source_licence": "public domain (hyangchal text, 1075 / c. 1280s)",
            "normalised": changed,
            "verified": key != "mojukjirangga",
            "references": [{"author": "llamapipe project", "licence": "CC0-1.0", "label": OURS}],
        }
        if ogura:
            meta["reading"] = ogura
            meta["reading_provenance"] = {
                "author": "小倉進平 (Ogura Shinpei), 鄕歌及び吏讀の研究, 1929",
                "licence": "public domain (author d. 1944)",
                "url": "https://ko.wikisource.org/wiki/%EC%B2%98%EC%9A%A9%EA%B0%80",
            }
        row = {"id": key, "source": text, "references": [modern], "meta": meta}
        f.write(json.dumps(row, ensure_ascii=False) + "\n")
print("ok", len(items))
