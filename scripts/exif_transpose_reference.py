# Reference for src/data/imageFile.test.ts: what PIL's ImageOps.exif_transpose does to a 3x2 image
# whose pixel (x, y) holds the value y*3 + x, for each EXIF orientation 1..8. It saves a PNG with an
# eXIf chunk (as the test builds its own), reopens it and transposes, then prints size and values.
import io
from PIL import Image, ImageOps

for o in range(1, 9):
    im = Image.new("L", (3, 2))
    im.putdata([y * 3 + x for y in range(2) for x in range(3)])
    exif = Image.Exif()
    exif[0x0112] = o
    buf = io.BytesIO()
    im.save(buf, "PNG", exif=exif.tobytes())
    t = ImageOps.exif_transpose(Image.open(io.BytesIO(buf.getvalue())))
    print(o, t.size, list(t.getdata()))
