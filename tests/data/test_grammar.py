"""Synthetic 9-way parallel sentence generator: golden translations, numbers, determinism, counts."""
import os
import random
import subprocess
import sys

import pytest

from mlst_jax.data.synthetic import grammar
from mlst_jax.data.synthetic.grammar import (LANGS, NP, Spec, num_distinct_sentences, number_word, render,
                                             sample_sentences)

GOLDEN = [
    (Spec("transitive", subj=NP("brother", "my"), verb="read", obj=NP("book", adj="old"), adv="every_morning"), {
        "en": "Every morning my brother reads the old book.",
        "de": "Jeden Morgen liest mein Bruder das alte Buch.",
        "es": "Todas las mañanas mi hermano lee el libro viejo.",
        "fr": "Chaque matin mon frère lit le vieux livre.",
        "it": "Ogni mattina mio fratello legge il libro vecchio.",
        "nl": "Elke ochtend leest mijn broer het oude boek.",
        "pt": "Todas as manhãs o meu irmão lê o livro velho.",
        "ro": "În fiecare dimineață fratele meu citește cartea veche.",
        "ru": "Каждое утро мой брат читает старую книгу.",
    }),
    (Spec("counted_objects", subj="I", verb="see", obj=NP("cat", "num", True, num=23)), {
        "en": "I see twenty-three cats.",
        "de": "Ich sehe dreiundzwanzig Katzen.",
        "es": "Veo veintitrés gatos.",
        "fr": "Je vois vingt-trois chats.",
        "it": "Vedo ventitré gatti.",
        "nl": "Ik zie drieëntwintig katten.",
        "pt": "Vejo vinte e três gatos.",
        "ro": "Văd douăzeci și trei de pisici.",
        "ru": "Я вижу двадцать три кошки.",
    }),
    (Spec("counted_objects", subj="we", verb="buy", obj=NP("apple", "num", True, num=21), tense="past",
          adv="yesterday"), {
        "en": "Yesterday we bought twenty-one apples.",
        "de": "Gestern haben wir einundzwanzig Äpfel gekauft.",
        "es": "Ayer compramos veintiuna manzanas.",
        "fr": "Hier nous avons acheté vingt et une pommes.",
        "it": "Ieri abbiamo comprato ventuno mele.",
        "nl": "Gisteren hebben wij eenentwintig appels gekocht.",
        "pt": "Ontem comprámos vinte e uma maçãs.",
        "ro": "Ieri am cumpărat douăzeci și unu de mere.",
        "ru": "Вчера мы купили двадцать одно яблоко.",
    }),
    (Spec("counted_objects", subj="he", verb="see", obj=NP("dog", "num", True, num=3)), {
        "en": "He sees three dogs.",
        "de": "Er sieht drei Hunde.",
        "es": "Él ve tres perros.",
        "fr": "Il voit trois chiens.",
        "it": "Lui vede tre cani.",
        "nl": "Hij ziet drie honden.",
        "pt": "Ele vê três cães.",
        "ro": "El vede trei câini.",
        "ru": "Он видит трёх собак.",
    }),
    (Spec("existential_indefinite", subj=NP("horse", "a", adj="big"), place="beach"), {
        "en": "There is a big horse on the beach.",
        "de": "Am Strand ist ein großes Pferd.",
        "es": "Hay un caballo grande en la playa.",
        "fr": "Il y a un grand cheval à la plage.",
        "it": "C'è un cavallo grande sulla spiaggia.",
        "nl": "Er is een groot paard op het strand.",
        "pt": "Há um cavalo grande na praia.",
        "ro": "La plajă este un cal mare.",
        "ru": "На пляже есть большая лошадь.",
    }),
    (Spec("existential_negative", subj=NP("bird", "no"), place="garden"), {
        "en": "There is no bird in the garden.",
        "de": "Im Garten ist kein Vogel.",
        "es": "No hay ningún pájaro en el jardín.",
        "fr": "Il n'y a pas d'oiseau dans le jardin.",
        "it": "Non c'è nessun uccello nel giardino.",
        "nl": "Er is geen vogel in de tuin.",
        "pt": "Não há nenhum pássaro no jardim.",
        "ro": "În grădină nu este nicio pasăre.",
        "ru": "В саду нет птицы.",
    }),
    (Spec("intransitive_negation", subj="she", verb="stay", place="hotel", tense="past"), {
        "en": "She did not stay at the hotel.",
        "de": "Sie ist nicht im Hotel geblieben.",
        "es": "Ella no se quedó en el hotel.",
        "fr": "Elle n'est pas restée à l'hôtel.",
        "it": "Lei non è rimasta in albergo.",
        "nl": "Zij is niet in het hotel gebleven.",
        "pt": "Ela não ficou no hotel.",
        "ro": "Ea nu a rămas la hotel.",
        "ru": "Она не осталась в гостинице.",
    }),
    (Spec("transitive_question", subj=NP("man"), verb="read", obj=NP("newspaper")), {
        "en": "Does the man read the newspaper?",
        "de": "Liest der Mann die Zeitung?",
        "es": "¿El hombre lee el periódico?",
        "fr": "Est-ce que l'homme lit le journal?",
        "it": "L'uomo legge il giornale?",
        "nl": "Leest de man de krant?",
        "pt": "O homem lê o jornal?",
        "ro": "Bărbatul citește ziarul?",
        "ru": "Мужчина читает газету?",
    }),
    (Spec("transitive", subj=NP("sister", "my"), verb="find", obj=NP("dog", "a", adj="black"), tense="past",
          adv="yesterday"), {
        "en": "Yesterday my sister found a black dog.",
        "de": "Gestern hat meine Schwester einen schwarzen Hund gefunden.",
        "es": "Ayer mi hermana encontró un perro negro.",
        "fr": "Hier ma sœur a trouvé un chien noir.",
        "it": "Ieri mia sorella ha trovato un cane nero.",
        "nl": "Gisteren heeft mijn zus een zwarte hond gevonden.",
        "pt": "Ontem a minha irmã encontrou um cão preto.",
        "ro": "Ieri sora mea a găsit un câine negru.",
        "ru": "Вчера моя сестра нашла чёрную собаку.",
    }),
    (Spec("transitive_negation", subj=NP("neighbor", "our"), verb="sell", obj=NP("house", adj="big")), {
        "en": "Our neighbor does not sell the big house.",
        "de": "Unser Nachbar verkauft das große Haus nicht.",
        "es": "Nuestro vecino no vende la casa grande.",
        "fr": "Notre voisin ne vend pas la grande maison.",
        "it": "Il nostro vicino non vende la casa grande.",
        "nl": "Onze buurman verkoopt het grote huis niet.",
        "pt": "O nosso vizinho não vende a casa grande.",
        "ro": "Vecinul nostru nu vinde casa mare.",
        "ru": "Наш сосед не продаёт большой дом.",
    }),
    (Spec("possessive", subj=NP("car", owner=NP("brother", "my")), adj="red"), {
        "en": "My brother's car is red.",
        "de": "Das Auto meines Bruders ist rot.",
        "es": "El coche de mi hermano es rojo.",
        "fr": "La voiture de mon frère est rouge.",
        "it": "La macchina di mio fratello è rossa.",
        "nl": "De auto van mijn broer is rood.",
        "pt": "O carro do meu irmão é vermelho.",
        "ro": "Mașina fratelui meu este roșie.",
        "ru": "Машина моего брата красная.",
    }),
    (Spec("possessive", subj=NP("dog", owner=NP("teacher")), adj="tired"), {
        "en": "The teacher's dog is tired.",
        "de": "Der Hund des Lehrers ist müde.",
        "es": "El perro del profesor está cansado.",
        "fr": "Le chien du professeur est fatigué.",
        "it": "Il cane del professore è stanco.",
        "nl": "De hond van de leraar is moe.",
        "pt": "O cão do professor está cansado.",
        "ro": "Câinele profesorului este obosit.",
        "ru": "Собака учителя устала.",
    }),
    (Spec("relative_clause", subj=NP("man", rel=Spec("rel", verb="buy", obj=NP("car"))), verb="work",
          place="station"), {
        "en": "The man who buys the car works at the station.",
        "de": "Der Mann, der das Auto kauft, arbeitet am Bahnhof.",
        "es": "El hombre que compra el coche trabaja en la estación.",
        "fr": "L'homme qui achète la voiture travaille à la gare.",
        "it": "L'uomo che compra la macchina lavora alla stazione.",
        "nl": "De man die de auto koopt, werkt op het station.",
        "pt": "O homem que compra o carro trabalha na estação.",
        "ro": "Bărbatul care cumpără mașina lucrează la gară.",
        "ru": "Мужчина, который покупает машину, работает на вокзале.",
    }),
    (Spec("complement_clause", subj="I", verb="know",
          comp=Spec("clause", subj=NP("girl"), verb="read", obj=NP("letter"), tense="past", adv="yesterday")), {
        "en": "I know that the girl read the letter yesterday.",
        "de": "Ich weiß, dass das Mädchen gestern den Brief gelesen hat.",
        "es": "Sé que la chica leyó la carta ayer.",
        "fr": "Je sais que la fille a lu la lettre hier.",
        "it": "So che la ragazza ha letto la lettera ieri.",
        "nl": "Ik weet dat het meisje gisteren de brief heeft gelezen.",
        "pt": "Sei que a menina leu a carta ontem.",
        "ro": "Știu că fata a citit scrisoarea ieri.",
        "ru": "Я знаю, что вчера девочка читала письмо.",
    }),
    (Spec("location_question", subj=NP("uncle", "her"), place="airport", tense="past"), {
        "en": "Was her uncle at the airport?",
        "de": "War ihr Onkel am Flughafen?",
        "es": "¿Su tío estaba en el aeropuerto?",
        "fr": "Est-ce que son oncle était à l'aéroport?",
        "it": "Suo zio era all'aeroporto?",
        "nl": "Was haar oom op het vliegveld?",
        "pt": "O tio dela estava no aeroporto?",
        "ro": "Unchiul ei era la aeroport?",
        "ru": "Её дядя был в аэропорту?",
    }),
]

SEPARABLE = [
    (Spec("transitive", subj="they", verb="clean", obj=NP("kitchen", "our")), "nl", "Zij maken onze keuken schoon."),
    (Spec("transitive_negation", subj="he", verb="choose", obj=NP("hat", "the", True)), "de",
     "Er sucht die Hüte nicht aus."),
    (Spec("complement_clause", subj="she", verb="say", comp=Spec("clause", subj=NP("child", "my"), verb="clean",
                                                                  obj=NP("room"))),
     "nl", "Zij zegt dat mijn kind de kamer schoonmaakt."),
    (Spec("existential_number", subj=NP("mirror", "num", True, num=99), place="room"), "it",
     "Ci sono novantanove specchi nella stanza."),
    (Spec("predicative", subj=NP("uncle", "their", True), adj="sick"), "ru", "Их дяди больны."),
    (Spec("predicative_question", subj=NP("plate", "my"), adj="dirty"), "fr", "Est-ce que mon assiette est sale?"),
    (Spec("intransitive", subj=NP("child", "the", True), verb="play", place="garden", tense="past", adv="last_week"),
     "ro", "Săptămâna trecută copiii s-au jucat în grădină."),
    (Spec("transitive", subj=NP("dog", "his"), verb="eat", obj=NP("meat")), "de", "Sein Hund frisst das Fleisch."),
    (Spec("transitive", subj=NP("child"), verb="wash", obj=NP("dog", "my")), "es", "El niño lava a mi perro."),
]


@pytest.mark.parametrize("spec,expected", GOLDEN, ids=[g[0].pattern for g in GOLDEN])
def test_golden_translations(spec, expected):
    assert {lang: render(spec, lang) for lang in LANGS} == expected


@pytest.mark.parametrize("spec,lang,expected", SEPARABLE, ids=[f"{s.pattern}-{lang}" for s, lang, _ in SEPARABLE])
def test_phenomena(spec, lang, expected):
    assert render(spec, lang) == expected


NUMBERS = {
    "en": {1: "one", 13: "thirteen", 21: "twenty-one", 34: "thirty-four", 80: "eighty", 99: "ninety-nine"},
    "de": {1: "eins", 16: "sechzehn", 21: "einundzwanzig", 34: "vierunddreißig", 70: "siebzig", 99: "neunundneunzig"},
    "es": {1: "uno", 16: "dieciséis", 21: "veintiuno", 22: "veintidós", 34: "treinta y cuatro", 99: "noventa y nueve"},
    "fr": {1: "un", 17: "dix-sept", 21: "vingt et un", 34: "trente-quatre", 71: "soixante et onze",
           77: "soixante-dix-sept", 80: "quatre-vingts", 81: "quatre-vingt-un", 91: "quatre-vingt-onze",
           99: "quatre-vingt-dix-neuf"},
    "it": {1: "uno", 17: "diciassette", 21: "ventuno", 23: "ventitré", 28: "ventotto", 34: "trentaquattro",
           81: "ottantuno", 99: "novantanove"},
    "nl": {1: "één", 21: "eenentwintig", 22: "tweeëntwintig", 23: "drieëntwintig", 34: "vierendertig",
           80: "tachtig", 99: "negenennegentig"},
    "pt": {1: "um", 16: "dezasseis", 19: "dezanove", 21: "vinte e um", 34: "trinta e quatro", 99: "noventa e nove"},
    "ro": {1: "unu", 2: "doi", 12: "doisprezece", 14: "paisprezece", 21: "douăzeci și unu",
           34: "treizeci și patru", 60: "șaizeci", 99: "nouăzeci și nouă"},
    "ru": {1: "один", 11: "одиннадцать", 21: "двадцать один", 34: "тридцать четыре", 40: "сорок",
           90: "девяносто", 99: "девяносто девять"},
}


@pytest.mark.parametrize("lang", LANGS)
def test_number_words(lang):
    for n, word in NUMBERS[lang].items():
        assert number_word(n, lang) == word
    words = [number_word(n, lang) for n in range(1, 100)]
    assert len(set(words)) == 99 and all(w and w == w.strip() for w in words)


COUNTED_BOOKS = {  # "There are N books in the room." with 21, 34, 99 (agreement with a feminine noun in ro/ru)
    "en": ("twenty-one books", "thirty-four books", "ninety-nine books"),
    "de": ("einundzwanzig Bücher", "vierunddreißig Bücher", "neunundneunzig Bücher"),
    "es": ("veintiún libros", "treinta y cuatro libros", "noventa y nueve libros"),
    "fr": ("vingt et un livres", "trente-quatre livres", "quatre-vingt-dix-neuf livres"),
    "it": ("ventuno libri", "trentaquattro libri", "novantanove libri"),
    "nl": ("eenentwintig boeken", "vierendertig boeken", "negenennegentig boeken"),
    "pt": ("vinte e um livros", "trinta e quatro livros", "noventa e nove livros"),
    "ro": ("douăzeci și una de cărți", "treizeci și patru de cărți", "nouăzeci și nouă de cărți"),
    "ru": ("двадцать одна книга", "тридцать четыре книги", "девяносто девять книг"),
}


@pytest.mark.parametrize("lang", LANGS)
def test_numbers_in_sentences(lang):
    for n, phrase in zip((21, 34, 99), COUNTED_BOOKS[lang]):
        text = render(Spec("existential_number", subj=NP("book", "num", True, num=n), place="room"), lang)
        assert phrase in text, text


def test_feminine_numerals():
    assert number_word(21, "fr", "f") == "vingt et une"
    assert number_word(81, "fr", "f") == "quatre-vingt-une"
    assert number_word(31, "es", "f") == "treinta y una"
    assert number_word(22, "pt", "f") == "vinte e duas"
    assert number_word(12, "ro", "f") == "douăsprezece"
    assert number_word(22, "ro", "n") == "douăzeci și două"
    assert number_word(21, "ro", "n") == "douăzeci și unu"
    assert number_word(42, "ru", "f") == "сорок две"


@pytest.fixture(scope="module")
def sample():
    return sample_sentences(6000, seed=3)


def test_sample_well_formed(sample):
    assert len(sample) == 6000
    assert {s.pattern for s in sample} == set(grammar.PATTERNS)
    for s in sample:
        assert set(s.text) == set(LANGS)
        question = s.pattern.endswith("_question")
        for lang, text in s.text.items():
            first = next(ch for ch in text if ch.isalpha())
            assert first.isupper(), (lang, text)
            assert text.endswith("?" if question else "."), (lang, text)
            assert "  " not in text and " ," not in text and "' " not in text and ".." not in text, (lang, text)
            assert text[-2].isalpha(), (lang, text)
        assert s.text["es"].startswith("¿") == question


def test_distinct_and_one_english_source(sample):
    assert len({s.id for s in sample}) == len(sample)
    # one English sentence never stands for two different specs (no ambiguous sources)
    assert len({s.text["en"] for s in sample}) == len(sample)


def test_deterministic():
    a = sample_sentences(300, seed=11)
    b = sample_sentences(300, seed=11)
    c = sample_sentences(300, seed=12)
    assert a == b
    assert [s.id for s in a] != [s.id for s in c]
    assert len({s.id for s in a} & {s.id for s in c}) < 5


def test_exclude_makes_disjoint_splits():
    test = sample_sentences(200, seed=1)
    train = sample_sentences(500, seed=2, exclude={s.id for s in test})
    assert not {s.id for s in train} & {s.id for s in test}


def test_independent_of_hash_seed():
    code = ("from mlst_jax.data.synthetic.grammar import sample_sentences as s; "
            "print([(x.id, x.text['ru']) for x in s(50, 5)])")
    outs = []
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        outs.append(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                   check=True).stdout)
    assert outs[0] == outs[1]
    assert outs[0] == str([(x.id, x.text["ru"]) for x in sample_sentences(50, 5)]) + "\n"


def test_count_is_large_and_exact_on_small_patterns():
    counts = grammar.pattern_counts()
    assert num_distinct_sentences() == sum(counts.values()) >= 10**6
    assert len(counts) >= 15 and all(c > 0 for c in counts.values())
    # exhaustive check: drawing a small pattern many times finds exactly `count` distinct specs
    space = grammar._space()["existential_negative"]
    rng = random.Random(0)
    seen = {space.draw(rng) for _ in range(30 * counts["existential_negative"])}
    assert len(seen) == counts["existential_negative"]


def _words(x, out):
    """Lexicon ids and numbers anywhere in a spec or noun phrase, by kind."""
    if isinstance(x, NP):
        out["nouns"].add(x.noun)
        if x.adj:
            out["adjectives"].add(x.adj)
        if x.num is not None:
            out["numbers"].add(x.num)
        for part in (x.owner, x.rel):
            if part is not None:
                _words(part, out)
    elif isinstance(x, Spec):
        for field, kind in (("verb", "verbs"), ("place", "nouns"), ("adj", "adjectives")):
            if getattr(x, field):
                out[kind].add(getattr(x, field))
        for part in (x.subj, x.obj, x.comp):
            if part is not None:
                _words(part, out)
    return out


def test_demo_lexicon_subset_bounds_every_drawn_word():
    sub = grammar.lexicon_subset("demo")
    assert (len(sub.nouns), len(sub.adjectives), len(sub.verbs), sub.max_number) == (26, 10, 16, 12)
    space, rng = grammar._space("demo"), random.Random(0)
    seen = {"nouns": set(), "adjectives": set(), "verbs": set(), "numbers": set()}
    for pattern in grammar.PATTERNS:
        for _ in range(300):
            _words(space[pattern].draw(rng), seen)
    assert seen["nouns"] <= sub.nouns and seen["adjectives"] <= sub.adjectives and seen["verbs"] <= sub.verbs
    assert seen["numbers"] <= set(range(1, 13)) and max(seen["numbers"]) == 12
    assert len(seen["nouns"]) >= 20 and len(seen["verbs"]) >= 12  # the draws do use the subset
    counts, full = grammar.pattern_counts("demo"), grammar.pattern_counts()
    assert all(0 < counts[p] <= full[p] for p in grammar.PATTERNS)
    assert counts["existential_negative"] == 64 and num_distinct_sentences("demo") < num_distinct_sentences() / 10


def test_demo_lexicon_sentences_deterministic_and_distinct_from_full():
    a = sample_sentences(200, seed=4, lexicon="demo")
    assert a == sample_sentences(200, seed=4, lexicon="demo")
    assert len({s.id for s in a}) == 200 and {s.pattern for s in a} == set(grammar.PATTERNS)
    assert [s.id for s in a] != [s.id for s in sample_sentences(200, seed=4)]


def test_unknown_or_bad_lexicon_subset(monkeypatch):
    with pytest.raises(ValueError, match="unknown lexicon subset 'tiny'; choose from full, demo"):
        sample_sentences(5, seed=0, lexicon="tiny")
    from mlst_jax.data.synthetic.grammar import lexicon as lex

    bad = {"demo2": {"nouns": "man unicorn", "adjectives": "red", "verbs": "see", "max_number": 12}}
    monkeypatch.setattr(lex, "_load", lambda name: bad if name == "subsets.json" else {})
    with pytest.raises(ValueError, match=r"lexicon/subsets.json: demo2.nouns has ids that are not in the lexicon: "
                                         r"unicorn"):
        lex.lexicon_subset("demo2")
    bad["demo2"] = {"nouns": "man", "adjectives": "red", "verbs": "see", "max_number": 100}
    with pytest.raises(ValueError, match=r"demo2.max_number must be an integer in 2..99, got 100"):
        lex.lexicon_subset("demo2")
