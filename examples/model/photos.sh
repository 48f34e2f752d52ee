#!/usr/bin/env bash
# Gathers the photographs for training the bundled model (issue 29) from Debian 12's packages,
# with no network beyond apt: fetches the packages below with `apt-get download`, unpacks each
# with dpkg-deb in a temporary folder (removed on exit) and copies only the chosen photographs,
# unchanged, into OUT_DIR/train/ and OUT_DIR/heldout/. Every file, its author and licence and its
# path in the package are listed in examples/model/NOTICE.
#
# usage: examples/model/photos.sh OUT_DIR      (from any folder; needs apt-get, dpkg-deb, bunzip2)
#
# What is here: real photographs only (no renders, drawings, abstract art, screenshots or
# composites), each under a licence that allows redistributing a model trained on it (public
# domain, CC0, CC-BY, CC-BY-SA, GPL, LGPL, GFDL), in a format stb_image decodes (JPEG, PNG; the
# raccoon face is raw RGB given a PPM header, as reproduce.sh has always done). Nothing is
# converted. What was looked at and left out, and why, is at the end of NOTICE.
#
# The held-out split (never to be trained on): scikit-image's chelsea.png, scikit-learn's sample
# photos (china.jpg, flower.jpg), and 25 of the 399 gathered photographs (everything but the 14
# scikit-image/scipy training images), drawn once and fixed below, so that it never changes:
#   units: the gathered photographs, with siblings of one scene joined into one unit
#     (kphotoalbum's NAME and NAME_N such as bar55/bar55_2 or grand_canyon_1-3, Endless Sky's
#     engine/engine2, Scratch's city-with-water/city-with-water2): no scene is on both sides;
#   strata, by each unit's subject: nature (landscapes, plants, flowers, sky; 268 units),
#     animal (11), people (20) and object (objects, buildings, cities, interiors; 89);
#   within each stratum the sorted unit names were shuffled with Python 3's
#     random.Random(29).shuffle (seed 29, the issue's number) and the first 10 nature, 2 animal,
#     4 people and 8 object units held out (few animals: most of them stay in training).
#   That draw, rerun from this file's list (it prints the 25 held-out names):
#     python3 -c 'import random, re, sys, collections as c
#     rows = [l.split("|") for l in open(sys.argv[1]) if re.match(r"(train|heldout)\|", l)]
#     rows = [r for r in rows if r[1] not in ("python3-skimage", "python3-scipy", "python3-sklearn")]
#     unit = lambda n: re.sub(r"^(kphotoalbum-.*)_\d$|^(.*-engine|.*-city-with-water)2$",
#                             lambda m: next(g for g in m.groups() if g), n.rsplit(".", 1)[0])
#     units, subj = c.defaultdict(list), c.defaultdict(list)
#     for r in rows: units[unit(r[3])].append(r[3]); subj[unit(r[3])].append(r[4].strip())
#     for s, k in (("nature", 10), ("animal", 2), ("people", 4), ("object", 8)):
#       us = sorted(u for u in units if c.Counter(subj[u]).most_common(1)[0][0] == s)
#       random.Random(29).shuffle(us); print(*sorted(n for u in us[:k] for n in units[u]))' photos.sh
#
# Takes about 30 s on this machine with a fast mirror (352 MB of packages; the downloads
# dominate). Writes 388 files to train/ and 28 to heldout/.
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 OUT_DIR" >&2; exit 2; }
mkdir -p "$1/train" "$1/heldout"
out=$(cd "$1" && pwd)

# The package versions the list was made from (Debian 12). Another version is used with a
# warning: its files may have moved (the copy then fails) or changed.
declare -A version=(
  [endless-sky-data]=0.9.8-1.2
  [kphotoalbum]=5.9.1-1
  [lomiri-wallpapers-16.04]=20.04.0-2
  [lomiri-wallpapers-20.04]=20.04.0-2
  [lxqt-themes]=1.2.0-1
  [mate-backgrounds]=1.26.0-1
  [palapeli-data]=4:22.12.3-1
  [plasma-workspace-wallpapers]=4:5.27.5-2
  [python-matplotlib-data]=3.6.3-1
  [python3-scipy]=1.10.1-2
  [python3-skimage]=0.19.3-8
  [python3-sklearn]=1.2.1+dfsg-1
  [scratch]=1.4.0.6~dfsg1-6.1
  [tuxmath-data]=2.0.3-9
)

work=$(mktemp -d /tmp/vitmae-photos.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/debs" "$work/x"
# apt downloads as its own user _apt when it is root: let that user write the folder.
if [ "$(id -u)" = 0 ] && id _apt >/dev/null 2>&1; then chmod 711 "$work" && chown _apt "$work/debs"; fi
(cd "$work/debs" && apt-get download -q "${!version[@]}")
for deb in "$work"/debs/*.deb; do
  pkg=$(dpkg-deb -f "$deb" Package)
  got=$(dpkg-deb -f "$deb" Version)
  [ "$got" = "${version[$pkg]}" ] || echo "photos.sh: warning: $pkg is $got, the list was made from ${version[$pkg]}" >&2
  mkdir -p "$work/x/$pkg"
  dpkg-deb -x "$deb" "$work/x/$pkg"
done

# split|package|path in the package|output name|subject (nature, animal, people, object, texture, science)
n=0
while IFS='|' read -r split pkg path name _subject; do
  [ -n "$split" ] || continue
  src="$work/x/$pkg$path"
  if [ "$name" = face.ppm ]; then  # scipy's raccoon face: raw 1024x768 RGB bytes, bzip2-compressed
    (printf 'P6\n1024 768\n255\n'; bunzip2 -c "$src") > "$out/$split/$name"
  else
    cp "$src" "$out/$split/$name"
  fi
  chmod 644 "$out/$split/$name"
  echo "$split/$name" >> "$work/written"
  n=$((n + 1))
done <<'LIST'
train|python3-skimage|/usr/lib/python3/dist-packages/skimage/data/astronaut.png|astronaut.png|people
train|python3-skimage|/usr/lib/python3/dist-packages/skimage/data/camera.png|camera.png|people
train|python3-skimage|/usr/lib/python3/dist-packages/skimage/data/coffee.png|coffee.png|object
train|python3-skimage|/usr/lib/python3/dist-packages/skimage/data/rocket.jpg|rocket.jpg|object
train|python3-skimage|/usr/lib/python3/dist-packages/skimage/data/hubble_deep_field.jpg|hubble_deep_field.jpg|nature
train|python3-skimage|/usr/lib/python3/dist-packages/skimage/data/retina.jpg|retina.jpg|science
train|python3-skimage|/usr/lib/python3/dist-packages/skimage/data/brick.png|brick.png|texture
train|python3-skimage|/usr/lib/python3/dist-packages/skimage/data/grass.png|grass.png|texture
train|python3-skimage|/usr/lib/python3/dist-packages/skimage/data/gravel.png|gravel.png|texture
train|python3-skimage|/usr/lib/python3/dist-packages/skimage/data/coins.png|coins.png|object
train|python3-skimage|/usr/lib/python3/dist-packages/skimage/data/clock_motion.png|clock_motion.png|object
train|python3-skimage|/usr/lib/python3/dist-packages/skimage/data/ihc.png|ihc.png|science
train|python3-skimage|/usr/lib/python3/dist-packages/skimage/data/cell.png|cell.png|science
train|python3-scipy|/usr/lib/python3/dist-packages/scipy/misc/face.dat|face.ppm|animal
heldout|python3-skimage|/usr/lib/python3/dist-packages/skimage/data/chelsea.png|chelsea.png|animal
heldout|python3-sklearn|/usr/lib/python3/dist-packages/sklearn/datasets/images/china.jpg|china.jpg|object
heldout|python3-sklearn|/usr/lib/python3/dist-packages/sklearn/datasets/images/flower.jpg|flower.jpg|nature
train|plasma-workspace-wallpapers|/usr/share/wallpapers/BytheWater/contents/images/2560x1600.jpg|plasma-BytheWater.jpg|nature
train|plasma-workspace-wallpapers|/usr/share/wallpapers/ColdRipple/contents/images/2560x1600.jpg|plasma-ColdRipple.jpg|nature
train|plasma-workspace-wallpapers|/usr/share/wallpapers/ColorfulCups/contents/images/2560x1600.jpg|plasma-ColorfulCups.jpg|object
train|plasma-workspace-wallpapers|/usr/share/wallpapers/DarkestHour/contents/images/2560x1600.jpg|plasma-DarkestHour.jpg|nature
train|plasma-workspace-wallpapers|/usr/share/wallpapers/EveningGlow/contents/images/2560x1600.jpg|plasma-EveningGlow.jpg|object
train|plasma-workspace-wallpapers|/usr/share/wallpapers/FallenLeaf/contents/images/2560x1600.jpg|plasma-FallenLeaf.jpg|nature
train|plasma-workspace-wallpapers|/usr/share/wallpapers/Grey/contents/images/2560x1600.jpg|plasma-Grey.jpg|object
train|plasma-workspace-wallpapers|/usr/share/wallpapers/Kite/contents/images/2560x1600.jpg|plasma-Kite.jpg|nature
train|plasma-workspace-wallpapers|/usr/share/wallpapers/OneStandsOut/contents/images/2560x1600.jpg|plasma-OneStandsOut.jpg|nature
train|plasma-workspace-wallpapers|/usr/share/wallpapers/Path/contents/images/2560x1600.jpg|plasma-Path.jpg|nature
train|plasma-workspace-wallpapers|/usr/share/wallpapers/summer_1am/contents/images/2560x1600.jpg|plasma-summer_1am.jpg|nature
train|lomiri-wallpapers-16.04|/usr/share/backgrounds/Bridge_by_Sander_Klootwijk.jpg|lomiri-Bridge_by_Sander_Klootwijk.jpg|object
train|lomiri-wallpapers-16.04|/usr/share/backgrounds/Dragonfly_by_Bolly.jpg|lomiri-Dragonfly_by_Bolly.jpg|animal
train|lomiri-wallpapers-16.04|/usr/share/backgrounds/Picture_0B_by_freespace.jpg|lomiri-Picture_0B_by_freespace.jpg|object
train|lomiri-wallpapers-16.04|/usr/share/backgrounds/Picture_1A_by_freespace.jpg|lomiri-Picture_1A_by_freespace.jpg|object
train|lomiri-wallpapers-16.04|/usr/share/backgrounds/Wine_by_Jakkub_Mede.jpg|lomiri-Wine_by_Jakkub_Mede.jpg|object
train|lomiri-wallpapers-16.04|/usr/share/backgrounds/aitzgorri_by_Aitzol_Berasategi.jpg|lomiri-aitzgorri_by_Aitzol_Berasategi.jpg|nature
heldout|lomiri-wallpapers-16.04|/usr/share/backgrounds/free_by_Peter_Nerlich.jpg|lomiri-free_by_Peter_Nerlich.jpg|object
train|lomiri-wallpapers-16.04|/usr/share/backgrounds/friends_by_Aitzol_Berasategi.jpg|lomiri-friends_by_Aitzol_Berasategi.jpg|animal
train|lomiri-wallpapers-16.04|/usr/share/backgrounds/greentock_by_Peter_Nerlich.jpg|lomiri-greentock_by_Peter_Nerlich.jpg|object
train|lomiri-wallpapers-16.04|/usr/share/backgrounds/life_by_Aitzol_Berasategi.jpg|lomiri-life_by_Aitzol_Berasategi.jpg|nature
train|lomiri-wallpapers-16.04|/usr/share/backgrounds/picosdeeuropa_by_Aitzol_Berasategi.jpg|lomiri-picosdeeuropa_by_Aitzol_Berasategi.jpg|nature
train|lomiri-wallpapers-16.04|/usr/share/backgrounds/seeding_by_Clements_Engelhardt.jpg|lomiri-seeding_by_Clements_Engelhardt.jpg|nature
train|lomiri-wallpapers-16.04|/usr/share/backgrounds/sunset_by_Aitzol_Berasategi.jpg|lomiri-sunset_by_Aitzol_Berasategi.jpg|nature
train|lomiri-wallpapers-20.04|/usr/share/backgrounds/Kleiber_by_Lukas_Baubkus.jpg|lomiri-Kleiber_by_Lukas_Baubkus.jpg|animal
train|mate-backgrounds|/usr/share/backgrounds/mate/nature/Aqua.jpg|mate-Aqua.jpg|nature
train|mate-backgrounds|/usr/share/backgrounds/mate/nature/Blinds.jpg|mate-Blinds.jpg|nature
train|mate-backgrounds|/usr/share/backgrounds/mate/nature/Dune.jpg|mate-Dune.jpg|nature
train|mate-backgrounds|/usr/share/backgrounds/mate/nature/FreshFlower.jpg|mate-FreshFlower.jpg|nature
train|mate-backgrounds|/usr/share/backgrounds/mate/nature/Garden.jpg|mate-Garden.jpg|nature
train|mate-backgrounds|/usr/share/backgrounds/mate/nature/GreenMeadow.jpg|mate-GreenMeadow.jpg|nature
train|mate-backgrounds|/usr/share/backgrounds/mate/nature/LadyBird.jpg|mate-LadyBird.jpg|animal
train|mate-backgrounds|/usr/share/backgrounds/mate/nature/RainDrops.jpg|mate-RainDrops.jpg|nature
train|mate-backgrounds|/usr/share/backgrounds/mate/nature/Storm.jpg|mate-Storm.jpg|nature
train|mate-backgrounds|/usr/share/backgrounds/mate/nature/TwoWings.jpg|mate-TwoWings.jpg|nature
train|mate-backgrounds|/usr/share/backgrounds/mate/nature/YellowFlower.jpg|mate-YellowFlower.jpg|nature
train|lxqt-themes|/usr/share/lxqt/wallpapers/after-the-rain.jpg|lxqt-after-the-rain.jpg|nature
train|lxqt-themes|/usr/share/lxqt/wallpapers/appleflower.png|lxqt-appleflower.png|nature
train|lxqt-themes|/usr/share/lxqt/wallpapers/beam.png|lxqt-beam.png|nature
train|lxqt-themes|/usr/share/lxqt/wallpapers/butterfly.png|lxqt-butterfly.png|animal
heldout|lxqt-themes|/usr/share/lxqt/wallpapers/Butterfly-Kenneth-Wimer.jpg|lxqt-Butterfly-Kenneth-Wimer.jpg|animal
train|lxqt-themes|/usr/share/lxqt/wallpapers/drop.png|lxqt-drop.png|nature
heldout|lxqt-themes|/usr/share/lxqt/wallpapers/flowers.png|lxqt-flowers.png|nature
train|lxqt-themes|/usr/share/lxqt/wallpapers/fog.jpg|lxqt-fog.jpg|nature
train|lxqt-themes|/usr/share/lxqt/wallpapers/this-is-not-windows.jpg|lxqt-this-is-not-windows.jpg|nature
train|kphotoalbum|/usr/share/kphotoalbum/demo/anne_helene.jpg|kphotoalbum-anne_helene.jpg|people
train|kphotoalbum|/usr/share/kphotoalbum/demo/bar55.jpg|kphotoalbum-bar55.jpg|people
train|kphotoalbum|/usr/share/kphotoalbum/demo/bar55_2.jpg|kphotoalbum-bar55_2.jpg|people
train|kphotoalbum|/usr/share/kphotoalbum/demo/blackie.jpg|kphotoalbum-blackie.jpg|animal
train|kphotoalbum|/usr/share/kphotoalbum/demo/cold_water.jpg|kphotoalbum-cold_water.jpg|people
train|kphotoalbum|/usr/share/kphotoalbum/demo/donna.jpg|kphotoalbum-donna.jpg|animal
train|kphotoalbum|/usr/share/kphotoalbum/demo/donna_2.jpg|kphotoalbum-donna_2.jpg|animal
train|kphotoalbum|/usr/share/kphotoalbum/demo/grand_canyon_1.jpg|kphotoalbum-grand_canyon_1.jpg|people
train|kphotoalbum|/usr/share/kphotoalbum/demo/grand_canyon_2.jpg|kphotoalbum-grand_canyon_2.jpg|people
train|kphotoalbum|/usr/share/kphotoalbum/demo/grand_canyon_3.jpg|kphotoalbum-grand_canyon_3.jpg|nature
train|kphotoalbum|/usr/share/kphotoalbum/demo/jesper.jpg|kphotoalbum-jesper.jpg|people
train|kphotoalbum|/usr/share/kphotoalbum/demo/jesper_2.jpg|kphotoalbum-jesper_2.jpg|people
train|kphotoalbum|/usr/share/kphotoalbum/demo/new_wave_1.jpg|kphotoalbum-new_wave_1.jpg|people
train|kphotoalbum|/usr/share/kphotoalbum/demo/new_wave_2.jpg|kphotoalbum-new_wave_2.jpg|people
heldout|kphotoalbum|/usr/share/kphotoalbum/demo/pool.jpg|kphotoalbum-pool.jpg|people
heldout|kphotoalbum|/usr/share/kphotoalbum/demo/pool_2.jpg|kphotoalbum-pool_2.jpg|people
train|kphotoalbum|/usr/share/kphotoalbum/demo/qt-logo.jpg|kphotoalbum-qt-logo.jpg|people
train|kphotoalbum|/usr/share/kphotoalbum/demo/skagen.jpg|kphotoalbum-skagen.jpg|nature
train|kphotoalbum|/usr/share/kphotoalbum/demo/skagen_2.jpg|kphotoalbum-skagen_2.jpg|nature
train|kphotoalbum|/usr/share/kphotoalbum/demo/snow.jpg|kphotoalbum-snow.jpg|object
train|kphotoalbum|/usr/share/kphotoalbum/demo/spiff.jpg|kphotoalbum-spiff.jpg|animal
train|kphotoalbum|/usr/share/kphotoalbum/demo/spiff_2.jpg|kphotoalbum-spiff_2.jpg|animal
train|kphotoalbum|/usr/share/kphotoalbum/demo/sunset.jpg|kphotoalbum-sunset.jpg|nature
train|kphotoalbum|/usr/share/kphotoalbum/demo/wayne.jpg|kphotoalbum-wayne.jpg|people
train|palapeli-data|/usr/share/palapeli/collection/castle-maintenon.jpg|palapeli-castle-maintenon.jpg|object
train|palapeli-data|/usr/share/palapeli/collection/cincinnati-bridge.jpg|palapeli-cincinnati-bridge.jpg|object
train|palapeli-data|/usr/share/palapeli/collection/citrus-fruits.jpg|palapeli-citrus-fruits.jpg|object
train|palapeli-data|/usr/share/palapeli/collection/european-honey-bee.jpg|palapeli-european-honey-bee.jpg|animal
heldout|palapeli-data|/usr/share/palapeli/collection/panther-chameleon-female.jpg|palapeli-panther-chameleon-female.jpg|animal
heldout|python-matplotlib-data|/usr/share/matplotlib/mpl-data/sample_data/grace_hopper.jpg|matplotlib-grace_hopper.jpg|people
train|tuxmath-data|/usr/share/tuxmath/images/title/menu_bkg.jpg|tuxmath-menu_bkg.jpg|nature
train|scratch|/usr/share/scratch/Media/Backgrounds/Indoors/chalkboard.jpg|scratch-chalkboard.jpg|object
train|scratch|/usr/share/scratch/Media/Backgrounds/Indoors/clothing-store.jpg|scratch-clothing-store.jpg|object
train|scratch|/usr/share/scratch/Media/Backgrounds/Indoors/hall.jpg|scratch-hall.jpg|object
train|scratch|/usr/share/scratch/Media/Backgrounds/Indoors/kitchen.jpg|scratch-kitchen.jpg|object
train|scratch|/usr/share/scratch/Media/Backgrounds/Indoors/the-movies-inside.jpg|scratch-the-movies-inside.jpg|object
train|scratch|/usr/share/scratch/Media/Backgrounds/Nature/beach-malibu.jpg|scratch-beach-malibu.jpg|nature
train|scratch|/usr/share/scratch/Media/Backgrounds/Nature/canyon.jpg|scratch-canyon.jpg|nature
train|scratch|/usr/share/scratch/Media/Backgrounds/Nature/flower-bed.jpg|scratch-flower-bed.jpg|nature
train|scratch|/usr/share/scratch/Media/Backgrounds/Nature/forest.jpg|scratch-forest.jpg|nature
train|scratch|/usr/share/scratch/Media/Backgrounds/Nature/garden-rock.jpg|scratch-garden-rock.jpg|nature
train|scratch|/usr/share/scratch/Media/Backgrounds/Nature/grand-canyon.jpg|scratch-grand-canyon.jpg|nature
train|scratch|/usr/share/scratch/Media/Backgrounds/Nature/gravel-desert.jpg|scratch-gravel-desert.jpg|nature
train|scratch|/usr/share/scratch/Media/Backgrounds/Nature/hill.jpg|scratch-hill.jpg|nature
train|scratch|/usr/share/scratch/Media/Backgrounds/Nature/lake.jpg|scratch-lake.jpg|nature
train|scratch|/usr/share/scratch/Media/Backgrounds/Nature/moon.jpg|scratch-moon.jpg|nature
train|scratch|/usr/share/scratch/Media/Backgrounds/Nature/pathway.jpg|scratch-pathway.jpg|nature
train|scratch|/usr/share/scratch/Media/Backgrounds/Nature/tree.jpg|scratch-tree.jpg|nature
train|scratch|/usr/share/scratch/Media/Backgrounds/Nature/water-and-rocks.jpg|scratch-water-and-rocks.jpg|nature
train|scratch|/usr/share/scratch/Media/Backgrounds/Nature/wave.jpg|scratch-wave.jpg|nature
train|scratch|/usr/share/scratch/Media/Backgrounds/Outdoors/atom-playground.jpg|scratch-atom-playground.jpg|object
train|scratch|/usr/share/scratch/Media/Backgrounds/Outdoors/bench-with-view.jpg|scratch-bench-with-view.jpg|object
train|scratch|/usr/share/scratch/Media/Backgrounds/Outdoors/boardwalk.jpg|scratch-boardwalk.jpg|object
train|scratch|/usr/share/scratch/Media/Backgrounds/Outdoors/brick-wall-and-stairs.jpg|scratch-brick-wall-and-stairs.jpg|object
train|scratch|/usr/share/scratch/Media/Backgrounds/Outdoors/brick-wall2.jpg|scratch-brick-wall2.jpg|object
heldout|scratch|/usr/share/scratch/Media/Backgrounds/Outdoors/building-at-mit.jpg|scratch-building-at-mit.jpg|object
train|scratch|/usr/share/scratch/Media/Backgrounds/Outdoors/building-fireproof.jpg|scratch-building-fireproof.jpg|object
train|scratch|/usr/share/scratch/Media/Backgrounds/Outdoors/castle.jpg|scratch-castle.jpg|object
train|scratch|/usr/share/scratch/Media/Backgrounds/Outdoors/city-with-water.jpg|scratch-city-with-water.jpg|object
train|scratch|/usr/share/scratch/Media/Backgrounds/Outdoors/city-with-water2.jpg|scratch-city-with-water2.jpg|object
train|scratch|/usr/share/scratch/Media/Backgrounds/Outdoors/driveway.jpg|scratch-driveway.jpg|object
train|scratch|/usr/share/scratch/Media/Backgrounds/Outdoors/hallway_outdoors.jpg|scratch-hallway_outdoors.jpg|object
train|scratch|/usr/share/scratch/Media/Backgrounds/Outdoors/hay_field.jpg|scratch-hay_field.jpg|nature
train|scratch|/usr/share/scratch/Media/Backgrounds/Outdoors/houses.jpg|scratch-houses.jpg|object
train|scratch|/usr/share/scratch/Media/Backgrounds/Outdoors/mansion.jpg|scratch-mansion.jpg|object
train|scratch|/usr/share/scratch/Media/Backgrounds/Outdoors/parking-ramp.jpg|scratch-parking-ramp.jpg|object
train|scratch|/usr/share/scratch/Media/Backgrounds/Outdoors/pool.jpg|scratch-pool.jpg|object
train|scratch|/usr/share/scratch/Media/Backgrounds/Outdoors/route66.jpg|scratch-route66.jpg|object
train|scratch|/usr/share/scratch/Media/Backgrounds/Outdoors/silos.jpg|scratch-silos.jpg|object
train|scratch|/usr/share/scratch/Media/Backgrounds/Outdoors/the-movies.jpg|scratch-the-movies.jpg|object
train|scratch|/usr/share/scratch/Media/Backgrounds/Outdoors/train-tracks1.jpg|scratch-train-tracks1.jpg|object
train|scratch|/usr/share/scratch/Media/Backgrounds/Outdoors/train-tracks2.jpg|scratch-train-tracks2.jpg|object
train|scratch|/usr/share/scratch/Media/Backgrounds/Outdoors/village.jpg|scratch-village.jpg|object
train|scratch|/usr/share/scratch/Media/Backgrounds/Outdoors/wooden-house.jpg|scratch-wooden-house.jpg|object
train|scratch|/usr/share/scratch/Media/Backgrounds/Sports/baseball-field.jpg|scratch-baseball-field.jpg|object
train|scratch|/usr/share/scratch/Media/Backgrounds/Sports/basketball-court1-b.jpg|scratch-basketball-court1-b.jpg|object
train|scratch|/usr/share/scratch/Media/Backgrounds/Sports/football-field.jpg|scratch-football-field.jpg|object
train|scratch|/usr/share/scratch/Media/Backgrounds/Sports/playing-field.jpg|scratch-playing-field.jpg|object
train|scratch|/usr/share/scratch/Media/Backgrounds/Sports/tennis-backboard.jpg|scratch-tennis-backboard.jpg|object
train|endless-sky-data|/usr/share/games/endless-sky/images/scene/loc0.jpg|endlesssky-scene-loc0.jpg|people
train|endless-sky-data|/usr/share/games/endless-sky/images/scene/loc1.jpg|endlesssky-scene-loc1.jpg|people
train|endless-sky-data|/usr/share/games/endless-sky/images/scene/loc2.jpg|endlesssky-scene-loc2.jpg|people
heldout|endless-sky-data|/usr/share/games/endless-sky/images/scene/loc3.jpg|endlesssky-scene-loc3.jpg|people
heldout|endless-sky-data|/usr/share/games/endless-sky/images/scene/loc4.jpg|endlesssky-scene-loc4.jpg|people
train|endless-sky-data|/usr/share/games/endless-sky/images/scene/loc5.jpg|endlesssky-scene-loc5.jpg|people
train|endless-sky-data|/usr/share/games/endless-sky/images/scene/loc6.jpg|endlesssky-scene-loc6.jpg|people
train|endless-sky-data|/usr/share/games/endless-sky/images/scene/loc7.jpg|endlesssky-scene-loc7.jpg|people
train|endless-sky-data|/usr/share/games/endless-sky/images/scene/loc8.jpg|endlesssky-scene-loc8.jpg|people
train|endless-sky-data|/usr/share/games/endless-sky/images/scene/loc9.jpg|endlesssky-scene-loc9.jpg|people
train|endless-sky-data|/usr/share/games/endless-sky/images/scene/engine.jpg|endlesssky-scene-engine.jpg|object
train|endless-sky-data|/usr/share/games/endless-sky/images/scene/engine2.jpg|endlesssky-scene-engine2.jpg|object
train|endless-sky-data|/usr/share/games/endless-sky/images/land/badlands0.jpg|endlesssky-land-badlands0.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/badlands1.jpg|endlesssky-land-badlands1.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/badlands2.jpg|endlesssky-land-badlands2.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/badlands3.jpg|endlesssky-land-badlands3.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/badlands4.jpg|endlesssky-land-badlands4.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/badlands5.jpg|endlesssky-land-badlands5.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/badlands6.jpg|endlesssky-land-badlands6.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/badlands7.jpg|endlesssky-land-badlands7.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/badlands8.jpg|endlesssky-land-badlands8.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/badlands9-harro.jpg|endlesssky-land-badlands9-harro.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/beach0.jpg|endlesssky-land-beach0.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/beach1.jpg|endlesssky-land-beach1.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/beach10-sfiera.jpg|endlesssky-land-beach10-sfiera.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/beach11-harro.jpg|endlesssky-land-beach11-harro.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/beach12-harro.jpg|endlesssky-land-beach12-harro.jpg|nature
heldout|endless-sky-data|/usr/share/games/endless-sky/images/land/beach2.jpg|endlesssky-land-beach2.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/beach3.jpg|endlesssky-land-beach3.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/beach4.jpg|endlesssky-land-beach4.jpg|nature
heldout|endless-sky-data|/usr/share/games/endless-sky/images/land/beach5.jpg|endlesssky-land-beach5.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/beach6.jpg|endlesssky-land-beach6.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/beach7-sfiera.jpg|endlesssky-land-beach7-sfiera.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/beach8-sfiera.jpg|endlesssky-land-beach8-sfiera.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/beach9-sfiera.jpg|endlesssky-land-beach9-sfiera.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/bwerner0.jpg|endlesssky-land-bwerner0.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/bwerner1.jpg|endlesssky-land-bwerner1.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/bwerner2.jpg|endlesssky-land-bwerner2.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/bwerner3.jpg|endlesssky-land-bwerner3.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/bwerner4.jpg|endlesssky-land-bwerner4.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/bwerner5.jpg|endlesssky-land-bwerner5.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/bwerner6.jpg|endlesssky-land-bwerner6.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/bwerner7.jpg|endlesssky-land-bwerner7.jpg|nature
heldout|endless-sky-data|/usr/share/games/endless-sky/images/land/bwerner8.jpg|endlesssky-land-bwerner8.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/canyon0.jpg|endlesssky-land-canyon0.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/canyon01.jpg|endlesssky-land-canyon01.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/canyon02.jpg|endlesssky-land-canyon02.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/canyon03.jpg|endlesssky-land-canyon03.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/canyon04.jpg|endlesssky-land-canyon04.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/canyon05.jpg|endlesssky-land-canyon05.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/canyon1.jpg|endlesssky-land-canyon1.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/canyon10-harro.jpg|endlesssky-land-canyon10-harro.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/canyon2.jpg|endlesssky-land-canyon2.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/canyon3.jpg|endlesssky-land-canyon3.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/canyon4.jpg|endlesssky-land-canyon4.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/canyon5.jpg|endlesssky-land-canyon5.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/canyon6.jpg|endlesssky-land-canyon6.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/canyon7.jpg|endlesssky-land-canyon7.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/canyon8.jpg|endlesssky-land-canyon8.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/canyon9.jpg|endlesssky-land-canyon9.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/city0.jpg|endlesssky-land-city0.jpg|object
heldout|endless-sky-data|/usr/share/games/endless-sky/images/land/city1.jpg|endlesssky-land-city1.jpg|object
train|endless-sky-data|/usr/share/games/endless-sky/images/land/city10.jpg|endlesssky-land-city10.jpg|object
heldout|endless-sky-data|/usr/share/games/endless-sky/images/land/city11.jpg|endlesssky-land-city11.jpg|object
train|endless-sky-data|/usr/share/games/endless-sky/images/land/city12.jpg|endlesssky-land-city12.jpg|object
train|endless-sky-data|/usr/share/games/endless-sky/images/land/city13-sfiera.jpg|endlesssky-land-city13-sfiera.jpg|object
train|endless-sky-data|/usr/share/games/endless-sky/images/land/city14-sfiera.jpg|endlesssky-land-city14-sfiera.jpg|object
heldout|endless-sky-data|/usr/share/games/endless-sky/images/land/city15-sfiera.jpg|endlesssky-land-city15-sfiera.jpg|object
train|endless-sky-data|/usr/share/games/endless-sky/images/land/city16-sfiera.jpg|endlesssky-land-city16-sfiera.jpg|object
train|endless-sky-data|/usr/share/games/endless-sky/images/land/city17-sfiera.jpg|endlesssky-land-city17-sfiera.jpg|object
train|endless-sky-data|/usr/share/games/endless-sky/images/land/city18-iridium.jpg|endlesssky-land-city18-iridium.jpg|object
train|endless-sky-data|/usr/share/games/endless-sky/images/land/city2.jpg|endlesssky-land-city2.jpg|object
train|endless-sky-data|/usr/share/games/endless-sky/images/land/city3.jpg|endlesssky-land-city3.jpg|object
train|endless-sky-data|/usr/share/games/endless-sky/images/land/city4.jpg|endlesssky-land-city4.jpg|object
train|endless-sky-data|/usr/share/games/endless-sky/images/land/city5.jpg|endlesssky-land-city5.jpg|object
heldout|endless-sky-data|/usr/share/games/endless-sky/images/land/city6.jpg|endlesssky-land-city6.jpg|object
train|endless-sky-data|/usr/share/games/endless-sky/images/land/city7.jpg|endlesssky-land-city7.jpg|object
train|endless-sky-data|/usr/share/games/endless-sky/images/land/city8.jpg|endlesssky-land-city8.jpg|object
train|endless-sky-data|/usr/share/games/endless-sky/images/land/city9.jpg|endlesssky-land-city9.jpg|object
train|endless-sky-data|/usr/share/games/endless-sky/images/land/desert0.jpg|endlesssky-land-desert0.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/desert1.jpg|endlesssky-land-desert1.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/desert10-harro.jpg|endlesssky-land-desert10-harro.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/desert2.jpg|endlesssky-land-desert2.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/desert4.jpg|endlesssky-land-desert4.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/desert5.jpg|endlesssky-land-desert5.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/desert6.jpg|endlesssky-land-desert6.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/desert7.jpg|endlesssky-land-desert7.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/desert8-sfiera.jpg|endlesssky-land-desert8-sfiera.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/desert9-sfiera.jpg|endlesssky-land-desert9-sfiera.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/dmottl0.jpg|endlesssky-land-dmottl0.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/dmottl1.jpg|endlesssky-land-dmottl1.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/dmottl2.jpg|endlesssky-land-dmottl2.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/dmottl3.jpg|endlesssky-land-dmottl3.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/dmottl4.jpg|endlesssky-land-dmottl4.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/dmottl5.jpg|endlesssky-land-dmottl5.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/dune0.jpg|endlesssky-land-dune0.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/dune1.jpg|endlesssky-land-dune1.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/dune2.jpg|endlesssky-land-dune2.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/dune3.jpg|endlesssky-land-dune3.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/dune4.jpg|endlesssky-land-dune4.jpg|nature
heldout|endless-sky-data|/usr/share/games/endless-sky/images/land/dune5.jpg|endlesssky-land-dune5.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/dune6-harro.jpg|endlesssky-land-dune6-harro.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/earthrise.jpg|endlesssky-land-earthrise.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/fields0.jpg|endlesssky-land-fields0.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/fields1.jpg|endlesssky-land-fields1.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/fields10-sfiera.jpg|endlesssky-land-fields10-sfiera.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/fields11-sfiera.jpg|endlesssky-land-fields11-sfiera.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/fields12-sfiera.jpg|endlesssky-land-fields12-sfiera.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/fields13-sfiera.jpg|endlesssky-land-fields13-sfiera.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/fields2.jpg|endlesssky-land-fields2.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/fields3.jpg|endlesssky-land-fields3.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/fields4.jpg|endlesssky-land-fields4.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/fields5.jpg|endlesssky-land-fields5.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/fields6.jpg|endlesssky-land-fields6.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/fields7.jpg|endlesssky-land-fields7.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/fields8.jpg|endlesssky-land-fields8.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/fields9.jpg|endlesssky-land-fields9.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/fog0.jpg|endlesssky-land-fog0.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/fog1.jpg|endlesssky-land-fog1.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/fog2.jpg|endlesssky-land-fog2.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/fog3.jpg|endlesssky-land-fog3.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/fog4.jpg|endlesssky-land-fog4.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/fog5.jpg|endlesssky-land-fog5.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/fog6.jpg|endlesssky-land-fog6.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/fog7.jpg|endlesssky-land-fog7.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/forest0.jpg|endlesssky-land-forest0.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/forest1.jpg|endlesssky-land-forest1.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/forest2.jpg|endlesssky-land-forest2.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/forest3.jpg|endlesssky-land-forest3.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/forest4.jpg|endlesssky-land-forest4.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/forest5.jpg|endlesssky-land-forest5.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/hills0.jpg|endlesssky-land-hills0.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/hills1.jpg|endlesssky-land-hills1.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/hills2.jpg|endlesssky-land-hills2.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/hills5-sfiera.jpg|endlesssky-land-hills5-sfiera.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/hills6-sfiera.jpg|endlesssky-land-hills6-sfiera.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/hills7-harro.jpg|endlesssky-land-hills7-harro.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/industrial0-iridium.jpg|endlesssky-land-industrial0-iridium.jpg|object
train|endless-sky-data|/usr/share/games/endless-sky/images/land/lava0.jpg|endlesssky-land-lava0.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/lava1.jpg|endlesssky-land-lava1.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/lava2.jpg|endlesssky-land-lava2.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/lava3.jpg|endlesssky-land-lava3.jpg|nature
heldout|endless-sky-data|/usr/share/games/endless-sky/images/land/lava4.jpg|endlesssky-land-lava4.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/lava5.jpg|endlesssky-land-lava5.jpg|nature
heldout|endless-sky-data|/usr/share/games/endless-sky/images/land/lava6.jpg|endlesssky-land-lava6.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/lava7-sfiera.jpg|endlesssky-land-lava7-sfiera.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/loc0.jpg|endlesssky-land-loc0.jpg|object
train|endless-sky-data|/usr/share/games/endless-sky/images/land/loc1.jpg|endlesssky-land-loc1.jpg|object
heldout|endless-sky-data|/usr/share/games/endless-sky/images/land/loc2.jpg|endlesssky-land-loc2.jpg|object
train|endless-sky-data|/usr/share/games/endless-sky/images/land/mfield0.jpg|endlesssky-land-mfield0.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/mfield1.jpg|endlesssky-land-mfield1.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/mfield2.jpg|endlesssky-land-mfield2.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/mfield3.jpg|endlesssky-land-mfield3.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/mfield4.jpg|endlesssky-land-mfield4.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/mfield5.jpg|endlesssky-land-mfield5.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/mountain0.jpg|endlesssky-land-mountain0.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/mountain1.jpg|endlesssky-land-mountain1.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/mountain10-sfiera.jpg|endlesssky-land-mountain10-sfiera.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/mountain11-sfiera.jpg|endlesssky-land-mountain11-sfiera.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/mountain12-sfiera.jpg|endlesssky-land-mountain12-sfiera.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/mountain13-sfiera.jpg|endlesssky-land-mountain13-sfiera.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/mountain14-sfiera.jpg|endlesssky-land-mountain14-sfiera.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/mountain15-sfiera.jpg|endlesssky-land-mountain15-sfiera.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/mountain16-striker.jpg|endlesssky-land-mountain16-striker.jpg|nature
heldout|endless-sky-data|/usr/share/games/endless-sky/images/land/mountain17-harro.jpg|endlesssky-land-mountain17-harro.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/mountain18-harro.jpg|endlesssky-land-mountain18-harro.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/mountain19-harro.jpg|endlesssky-land-mountain19-harro.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/mountain20-harro.jpg|endlesssky-land-mountain20-harro.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/mountain21-harro.jpg|endlesssky-land-mountain21-harro.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/mountain22-spfld.jpg|endlesssky-land-mountain22-spfld.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/mountain23-spfld.jpg|endlesssky-land-mountain23-spfld.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/mountain24-spfld.jpg|endlesssky-land-mountain24-spfld.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/mountain25-spfld.jpg|endlesssky-land-mountain25-spfld.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/mountain3.jpg|endlesssky-land-mountain3.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/mountain4.jpg|endlesssky-land-mountain4.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/mountain5.jpg|endlesssky-land-mountain5.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/mountain6.jpg|endlesssky-land-mountain6.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/mountain7.jpg|endlesssky-land-mountain7.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/mountain8.jpg|endlesssky-land-mountain8.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/mountain9.jpg|endlesssky-land-mountain9.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/myrabella0.jpg|endlesssky-land-myrabella0.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/myrabella1.jpg|endlesssky-land-myrabella1.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/myrabella2.jpg|endlesssky-land-myrabella2.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/myrabella3.jpg|endlesssky-land-myrabella3.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/myrabella4.jpg|endlesssky-land-myrabella4.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/myrabella5.jpg|endlesssky-land-myrabella5.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/myrabella6.jpg|endlesssky-land-myrabella6.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/myrabella7.jpg|endlesssky-land-myrabella7.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/myrabella8.jpg|endlesssky-land-myrabella8.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/nasa0.jpg|endlesssky-land-nasa0.jpg|object
train|endless-sky-data|/usr/share/games/endless-sky/images/land/nasa1.jpg|endlesssky-land-nasa1.jpg|object
train|endless-sky-data|/usr/share/games/endless-sky/images/land/nasa2.jpg|endlesssky-land-nasa2.jpg|object
train|endless-sky-data|/usr/share/games/endless-sky/images/land/nasa3.jpg|endlesssky-land-nasa3.jpg|object
train|endless-sky-data|/usr/share/games/endless-sky/images/land/nasa4.jpg|endlesssky-land-nasa4.jpg|object
train|endless-sky-data|/usr/share/games/endless-sky/images/land/nasa5.jpg|endlesssky-land-nasa5.jpg|object
heldout|endless-sky-data|/usr/share/games/endless-sky/images/land/nasa6.jpg|endlesssky-land-nasa6.jpg|object
train|endless-sky-data|/usr/share/games/endless-sky/images/land/nasa7.jpg|endlesssky-land-nasa7.jpg|object
train|endless-sky-data|/usr/share/games/endless-sky/images/land/sea0.jpg|endlesssky-land-sea0.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/sea1.jpg|endlesssky-land-sea1.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/sea10-sfiera.jpg|endlesssky-land-sea10-sfiera.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/sea11-sfiera.jpg|endlesssky-land-sea11-sfiera.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/sea12-sfiera.jpg|endlesssky-land-sea12-sfiera.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/sea13-sfiera.jpg|endlesssky-land-sea13-sfiera.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/sea14-sfiera.jpg|endlesssky-land-sea14-sfiera.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/sea15-harro.jpg|endlesssky-land-sea15-harro.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/sea16-harro.jpg|endlesssky-land-sea16-harro.jpg|nature
heldout|endless-sky-data|/usr/share/games/endless-sky/images/land/sea17-harro.jpg|endlesssky-land-sea17-harro.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/sea2.jpg|endlesssky-land-sea2.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/sea3.jpg|endlesssky-land-sea3.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/sea4.jpg|endlesssky-land-sea4.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/sea5.jpg|endlesssky-land-sea5.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/sea6.jpg|endlesssky-land-sea6.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/sea7.jpg|endlesssky-land-sea7.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/sea8.jpg|endlesssky-land-sea8.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/sea9.jpg|endlesssky-land-sea9.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/sky0.jpg|endlesssky-land-sky0.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/sky1.jpg|endlesssky-land-sky1.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/sky2.jpg|endlesssky-land-sky2.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/sky3.jpg|endlesssky-land-sky3.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/sky4.jpg|endlesssky-land-sky4.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/sky5.jpg|endlesssky-land-sky5.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/sky7.jpg|endlesssky-land-sky7.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/sky8.jpg|endlesssky-land-sky8.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/sky9.jpg|endlesssky-land-sky9.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/snow0.jpg|endlesssky-land-snow0.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/snow1.jpg|endlesssky-land-snow1.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/snow10-sfiera.jpg|endlesssky-land-snow10-sfiera.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/snow10.jpg|endlesssky-land-snow10.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/snow11-sfiera.jpg|endlesssky-land-snow11-sfiera.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/snow2.jpg|endlesssky-land-snow2.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/snow3.jpg|endlesssky-land-snow3.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/snow4.jpg|endlesssky-land-snow4.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/snow5.jpg|endlesssky-land-snow5.jpg|nature
heldout|endless-sky-data|/usr/share/games/endless-sky/images/land/snow6.jpg|endlesssky-land-snow6.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/snow7.jpg|endlesssky-land-snow7.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/snow8.jpg|endlesssky-land-snow8.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/snow9.jpg|endlesssky-land-snow9.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/space0.jpg|endlesssky-land-space0.jpg|object
train|endless-sky-data|/usr/share/games/endless-sky/images/land/space1.jpg|endlesssky-land-space1.jpg|object
train|endless-sky-data|/usr/share/games/endless-sky/images/land/space2.jpg|endlesssky-land-space2.jpg|object
train|endless-sky-data|/usr/share/games/endless-sky/images/land/space3.jpg|endlesssky-land-space3.jpg|object
train|endless-sky-data|/usr/share/games/endless-sky/images/land/space4.jpg|endlesssky-land-space4.jpg|object
train|endless-sky-data|/usr/share/games/endless-sky/images/land/space5.jpg|endlesssky-land-space5.jpg|object
train|endless-sky-data|/usr/share/games/endless-sky/images/land/space7.jpg|endlesssky-land-space7.jpg|object
train|endless-sky-data|/usr/share/games/endless-sky/images/land/station0.jpg|endlesssky-land-station0.jpg|object
train|endless-sky-data|/usr/share/games/endless-sky/images/land/station1.jpg|endlesssky-land-station1.jpg|object
train|endless-sky-data|/usr/share/games/endless-sky/images/land/station2.jpg|endlesssky-land-station2.jpg|object
train|endless-sky-data|/usr/share/games/endless-sky/images/land/station3.jpg|endlesssky-land-station3.jpg|object
train|endless-sky-data|/usr/share/games/endless-sky/images/land/station4.jpg|endlesssky-land-station4.jpg|object
train|endless-sky-data|/usr/share/games/endless-sky/images/land/valley0.jpg|endlesssky-land-valley0.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/valley1.jpg|endlesssky-land-valley1.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/valley10-sfiera.jpg|endlesssky-land-valley10-sfiera.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/valley11-harro.jpg|endlesssky-land-valley11-harro.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/valley12-harro.jpg|endlesssky-land-valley12-harro.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/valley13-harro.jpg|endlesssky-land-valley13-harro.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/valley14-harro.jpg|endlesssky-land-valley14-harro.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/valley15-harro.jpg|endlesssky-land-valley15-harro.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/valley2.jpg|endlesssky-land-valley2.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/valley3.jpg|endlesssky-land-valley3.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/valley4.jpg|endlesssky-land-valley4.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/valley5.jpg|endlesssky-land-valley5.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/valley6.jpg|endlesssky-land-valley6.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/valley8.jpg|endlesssky-land-valley8.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/valley9.jpg|endlesssky-land-valley9.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/water0.jpg|endlesssky-land-water0.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/water1.jpg|endlesssky-land-water1.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/water10-harro.jpg|endlesssky-land-water10-harro.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/water11-harro.jpg|endlesssky-land-water11-harro.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/water2.jpg|endlesssky-land-water2.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/water3.jpg|endlesssky-land-water3.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/water4.jpg|endlesssky-land-water4.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/water5.jpg|endlesssky-land-water5.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/water7.jpg|endlesssky-land-water7.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/water8.jpg|endlesssky-land-water8.jpg|nature
train|endless-sky-data|/usr/share/games/endless-sky/images/land/water9.jpg|endlesssky-land-water9.jpg|nature
LIST

# Anything else in train/ or heldout/ (a file from an older list) would be trained or scored on.
stray=$(cd "$out" && find train heldout -mindepth 1 | sort | comm -23 - <(sort "$work/written"))
[ -z "$stray" ] || { echo "photos.sh: $out holds files that are not in the list:" >&2; echo "$stray" >&2; exit 1; }
echo "photos.sh: $n photographs in $out: $(ls "$out/train" | wc -l) in train/, $(ls "$out/heldout" | wc -l) in heldout/"
